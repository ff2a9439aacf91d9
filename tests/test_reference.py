"""The pure-NumPy reference cells (fastrnn/reference/), called directly through the cell contract
of fastrnn/_backends.py: gradients against finite differences, padding, direction, dtype, and the
forward pass against a textbook example, scalar loops written from docs/math.md, and PyTorch."""
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from fastrnn import gradcheck
from fastrnn.reference import gru, lstm, rnn
from fastrnn._cells import CELLS
from cases import CASES, make_params, num_states, reference

T, B, D, H = 4, 3, 5, 4
MIXED_LENGTHS = (3, 1, 4)  # unsorted, with a full-length sequence and a one-step one
STATES = {reference(case.cell): num_states(case.cell) for case in CASES.values()}


def make_problem(case, rng, bias=True, dtype=np.float64, steps=T, batch=B):
    """Random x, state0, params (uniform in ±0.5, larger than PyTorch's init to exercise the gates)."""
    cell, options, _ = CASES[case]
    module = reference(cell)
    x = rng.standard_normal((steps, batch, D)).astype(dtype)
    state0 = tuple(rng.standard_normal((batch, H)).astype(dtype) for _ in range(STATES[module]))
    params = make_params(case, rng, dtype, D, H, bias)
    return module, options, x, state0, params


def upstream_gradients(module, rng, dtype=np.float64, steps=T, batch=B):
    """Random dy and dstate_n (a nonzero gradient on the final state too)."""
    dy = rng.standard_normal((steps, batch, H)).astype(dtype)
    dstate_n = tuple(rng.standard_normal((batch, H)).astype(dtype) for _ in range(STATES[module]))
    return dy, dstate_n


def zero_grads(params):
    return {name: None if value is None else np.zeros_like(value) for name, value in params.items()}


def as_lengths(lengths):
    return None if lengths is None else np.array(lengths, dtype=np.int64)


def run_backward(module, options, x, state0, params, lengths, reverse, dy, dstate_n):
    """forward then backward into fresh zero grads; returns dx, dstate0, grads."""
    _, _, cache = module.forward(x, state0, params, lengths, reverse, **options)
    grads = zero_grads(params)
    dx, dstate0 = module.backward(dy, dstate_n, cache, grads)
    return dx, dstate0, grads


# -- gradients -----------------------------------------------------------------------------------

@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("lengths", [None, MIXED_LENGTHS], ids=["full", "mixed_lengths"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("case", CASES)
def test_backward_matches_finite_differences(case, bias, lengths, reverse):
    rng = np.random.default_rng(1)
    module, options, x, state0, params = make_problem(case, rng, bias=bias)
    dy, dstate_n = upstream_gradients(module, rng)
    lengths = as_lengths(lengths)

    def loss():
        y, state_n, _ = module.forward(x, state0, params, lengths, reverse, **options)
        return np.sum(dy * y) + sum(np.sum(ds * s) for ds, s in zip(dstate_n, state_n))

    dx, dstate0, grads = run_backward(module, options, x, state0, params, lengths, reverse, dy, dstate_n)
    arrays = {"x": x, **{f"state0[{k}]": s for k, s in enumerate(state0)}}
    analytic = {"x": dx, **{f"state0[{k}]": ds for k, ds in enumerate(dstate0)}}
    for name, value in params.items():
        if value is not None:
            arrays[name], analytic[name] = value, grads[name]
    # x, every state, w_ih, w_hh, and the biases and peepholes when present
    assert len(arrays) == 1 + STATES[module] + 2 + (2 if bias else 0) + int(CASES[case].peephole)
    # eps=1e-6 central differences in float64: truncation ~eps² and rounding ~1e-16/eps, both far
    # below 1e-9. relu: no pre-activation of these seeded inputs lies within eps of the kink, so it
    # needs no looser tolerance (a kink would show as an O(1) error, not a pass).
    gradcheck(loss, arrays, analytic, eps=1e-6, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("case", CASES)
def test_backward_adds_into_existing_grads(case):
    rng = np.random.default_rng(2)
    module, options, x, state0, params = make_problem(case, rng)
    dy, dstate_n = upstream_gradients(module, rng)
    lengths = as_lengths(MIXED_LENGTHS)
    start = {name: rng.standard_normal(value.shape) for name, value in params.items() if value is not None}
    grads = {name: start[name].copy() if name in start else None for name in params}

    _, _, once = run_backward(module, options, x, state0, params, lengths, False, dy, dstate_n)
    for _ in range(2):
        _, _, cache = module.forward(x, state0, params, lengths, False, **options)
        module.backward(dy, dstate_n, cache, grads)

    for name in start:
        assert_allclose(grads[name], start[name] + 2 * once[name], rtol=1e-12, atol=1e-12, err_msg=name)


# -- padding (lengths) -----------------------------------------------------------------------------

@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("case", CASES)
def test_padded_steps_output_exact_zeros(case, reverse):
    rng = np.random.default_rng(3)
    module, options, x, state0, params = make_problem(case, rng)
    lengths = as_lengths(MIXED_LENGTHS)
    y, _, _ = module.forward(x, state0, params, lengths, reverse, **options)
    padded = np.arange(T)[:, None] >= lengths[None, :]
    assert padded.sum() == 4
    assert_array_equal(y[padded], 0.0)
    if case != "rnn_relu":  # relu outputs real zeros at valid steps too
        assert np.all(y[~padded] != 0.0)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("case", CASES)
def test_lengths_give_each_sequence_its_own_truncated_run(case, reverse):
    """y on the valid steps and state_n (the state at the sequence's last valid step) equal a run
    of the cell on that sequence alone, cut to its length."""
    rng = np.random.default_rng(4)
    module, options, x, state0, params = make_problem(case, rng)
    lengths = as_lengths(MIXED_LENGTHS)
    y, state_n, _ = module.forward(x, state0, params, lengths, reverse, **options)
    for b, length in enumerate(MIXED_LENGTHS):
        alone = tuple(s[b:b + 1] for s in state0)
        y_b, state_n_b, _ = module.forward(x[:length, b:b + 1].copy(), alone, params, None, reverse, **options)
        assert_allclose(y[:length, b], y_b[:, 0], rtol=1e-12, atol=1e-14, err_msg=f"y of sequence {b}")
        for k, (s, s_b) in enumerate(zip(state_n, state_n_b)):
            assert_allclose(s[b], s_b[0], rtol=1e-12, atol=1e-14, err_msg=f"state_n[{k}] of sequence {b}")


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("case", CASES)
def test_dy_at_padded_steps_changes_no_gradient(case, reverse):
    rng = np.random.default_rng(5)
    module, options, x, state0, params = make_problem(case, rng)
    dy, dstate_n = upstream_gradients(module, rng)
    lengths = as_lengths(MIXED_LENGTHS)
    padded = np.arange(T)[:, None] >= lengths[None, :]
    dy_other = dy.copy()
    dy_other[padded] = 100 * rng.standard_normal((int(padded.sum()), H))

    dx, dstate0, grads = run_backward(module, options, x, state0, params, lengths, reverse, dy, dstate_n)
    dx2, dstate02, grads2 = run_backward(module, options, x, state0, params, lengths, reverse, dy_other, dstate_n)
    assert_array_equal(dx, dx2)
    for ds, ds2 in zip(dstate0, dstate02):
        assert_array_equal(ds, ds2)
    for name, value in grads.items():
        if value is not None:
            assert_array_equal(value, grads2[name], err_msg=name)


# -- direction -------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_reverse_with_lengths_equals_forward_on_each_sequence_flipped(case):
    rng = np.random.default_rng(6)
    module, options, x, state0, params = make_problem(case, rng)
    lengths = as_lengths(MIXED_LENGTHS)
    y, state_n, _ = module.forward(x, state0, params, lengths, True, **options)
    for b, length in enumerate(MIXED_LENGTHS):
        flipped = x[:length, b:b + 1][::-1].copy()
        alone = tuple(s[b:b + 1] for s in state0)
        y_b, state_n_b, _ = module.forward(flipped, alone, params, None, False, **options)
        assert_allclose(y[:length, b], y_b[::-1, 0], rtol=1e-12, atol=1e-14, err_msg=f"y of sequence {b}")
        for k, (s, s_b) in enumerate(zip(state_n, state_n_b)):
            assert_allclose(s[b], s_b[0], rtol=1e-12, atol=1e-14, err_msg=f"state_n[{k}] of sequence {b}")


@pytest.mark.parametrize("case", CASES)
def test_reverse_with_lengths_gradients_equal_forward_on_each_sequence_flipped(case):
    """dx and dstate0 per sequence, and the parameter gradients summed over the sequences."""
    rng = np.random.default_rng(7)
    module, options, x, state0, params = make_problem(case, rng)
    dy, dstate_n = upstream_gradients(module, rng)
    lengths = as_lengths(MIXED_LENGTHS)
    dx, dstate0, grads = run_backward(module, options, x, state0, params, lengths, True, dy, dstate_n)

    summed = zero_grads(params)
    for b, length in enumerate(MIXED_LENGTHS):
        flipped = x[:length, b:b + 1][::-1].copy()
        alone = tuple(s[b:b + 1] for s in state0)
        _, _, cache = module.forward(flipped, alone, params, None, False, **options)
        dy_b = dy[:length, b:b + 1][::-1].copy()
        dx_b, dstate0_b = module.backward(dy_b, tuple(ds[b:b + 1] for ds in dstate_n), cache, summed)
        assert_allclose(dx[:length, b], dx_b[::-1, 0], rtol=1e-12, atol=1e-14, err_msg=f"dx of sequence {b}")
        assert_array_equal(dx[length:, b], 0.0)
        for k, (ds, ds_b) in enumerate(zip(dstate0, dstate0_b)):
            assert_allclose(ds[b], ds_b[0], rtol=1e-12, atol=1e-14, err_msg=f"dstate0[{k}] of sequence {b}")
    for name, value in grads.items():
        if value is not None:
            assert_allclose(value, summed[name], rtol=1e-12, atol=1e-13, err_msg=name)


# -- dtype and inputs ------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_float32_stays_float32_and_matches_float64(case):
    module, options, x, state0, params = make_problem(case, np.random.default_rng(8))
    dy, dstate_n = upstream_gradients(module, np.random.default_rng(9))
    lengths = as_lengths(MIXED_LENGTHS)

    def to32(arrays):
        return tuple(a.astype(np.float32) for a in arrays)

    params32 = {name: None if v is None else v.astype(np.float32) for name, v in params.items()}
    y32, state_n32, cache32 = module.forward(x.astype(np.float32), to32(state0), params32, lengths, True, **options)
    grads32 = zero_grads(params32)
    dx32, dstate032 = module.backward(dy.astype(np.float32), to32(dstate_n), cache32, grads32)
    y, state_n, _ = module.forward(x, state0, params, lengths, True, **options)
    dx, dstate0, grads = run_backward(module, options, x, state0, params, lengths, True, dy, dstate_n)

    results32 = {"y": y32, "dx": dx32, **{f"state_n[{k}]": s for k, s in enumerate(state_n32)},
                 **{f"dstate0[{k}]": s for k, s in enumerate(dstate032)},
                 **{name: g for name, g in grads32.items() if g is not None}}
    results64 = {"y": y, "dx": dx, **{f"state_n[{k}]": s for k, s in enumerate(state_n)},
                 **{f"dstate0[{k}]": s for k, s in enumerate(dstate0)},
                 **{name: g for name, g in grads.items() if g is not None}}
    for name, value in results32.items():
        assert value.dtype == np.float32, f"{name} is {value.dtype}"
        # float32 rounding (~6e-8) grows over 4 steps and the sums of the weight gradients
        assert_allclose(value, results64[name], rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("case", CASES)
def test_forward_and_backward_leave_their_inputs_unchanged(case):
    rng = np.random.default_rng(10)
    module, options, x, state0, params = make_problem(case, rng)
    dy, dstate_n = upstream_gradients(module, rng)
    inputs = {"x": x, "dy": dy, **{f"state0[{k}]": s for k, s in enumerate(state0)},
              **{f"dstate_n[{k}]": s for k, s in enumerate(dstate_n)},
              **{name: v for name, v in params.items() if v is not None}}
    saved = {name: value.copy() for name, value in inputs.items()}
    run_backward(module, options, x, state0, params, as_lengths(MIXED_LENGTHS), True, dy, dstate_n)
    for name, value in inputs.items():
        assert_array_equal(value, saved[name], err_msg=name)


# -- forward against independent computations ------------------------------------------------------

def test_elman_textbook_example_softmax_outputs():
    """The worked example of the issue: h0 = 0, U = w_ih, W = w_hh, b = b_ih, output softmax(V h + c)."""
    U = np.array([[0.1, 0.1], [0.0, 0.0], [0.0, -0.1]])
    W = np.array([[0.1, 0.1, 0.0], [0.0, 0.0, 0.0], [0.2, -0.1, -0.1]])
    b = np.array([0.0, 0.0, 0.2])
    V = np.array([[0.0, 0.1, 0.0], [-0.2, 0.0, 0.0]])
    c = np.array([0.2, 0.1])
    x = np.array([[0.0, 1.0], [0.0, 0.1], [0.1, -0.2], [0.5, 0.0]])[:, None, :]
    params = {"w_ih": U, "w_hh": W, "b_ih": b, "b_hh": np.zeros(3)}

    y, _, _ = rnn.forward(x, (np.zeros((1, 3)),), params, None, False, nonlinearity="tanh")
    logits = y[:, 0] @ V.T + c
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = [[0.5299, 0.4701], [0.5260, 0.4740], [0.5246, 0.4754], [0.5274, 0.4726]]
    assert_allclose(softmax, expected, rtol=0, atol=5e-5)  # the example gives 4 decimals


def _sigmoid(a):
    return 1.0 / (1.0 + math.exp(-a))


def _affine(w, b, v, row):
    """Row `row` of w @ v + b, with Python floats."""
    return sum(w[row][k] * v[k] for k in range(len(v))) + b[row]


def scalar_lstm_peephole(x, h0, c0, p, forget_gate=True):
    """docs/math.md's LSTM with peepholes, one Python float at a time; without forget gate
    (Hochreiter & Schmidhuber 1997: gate rows i, g, o, peepholes p_i, p_o) if not `forget_gate`."""
    w_ih, w_hh, b_ih, b_hh, w_peep = (p[k].tolist() for k in ("w_ih", "w_hh", "b_ih", "b_hh", "w_peep"))
    h, c, ys = h0.tolist(), c0.tolist(), []
    for x_t in x.tolist():
        y_t, c_next = [], []
        for b in range(len(x_t)):
            h_b, c_b = [], []
            for j in range(len(h[b])):
                def a(gate):  # W_i* x_t + b_i* + W_h* h_{t-1} + b_h* for unit j of `gate`
                    row = gate * len(h[b]) + j
                    return _affine(w_ih, b_ih, x_t[b], row) + _affine(w_hh, b_hh, h[b], row)
                i = _sigmoid(a(0) + w_peep[0][j] * c[b][j])
                if forget_gate:
                    f = _sigmoid(a(1) + w_peep[1][j] * c[b][j])
                    g = math.tanh(a(2))
                    c_t = f * c[b][j] + i * g
                    o = _sigmoid(a(3) + w_peep[2][j] * c_t)
                else:
                    g = math.tanh(a(1))
                    c_t = c[b][j] + i * g
                    o = _sigmoid(a(2) + w_peep[1][j] * c_t)
                h_b.append(o * math.tanh(c_t))
                c_b.append(c_t)
            y_t.append(h_b)
            c_next.append(c_b)
        h, c = y_t, c_next
        ys.append(y_t)
    return np.array(ys), np.array(h), np.array(c)


def scalar_gru_reset_before(x, h0, p):
    """docs/math.md's GRU with reset_after=False (Cho et al. 2014), one Python float at a time."""
    w_ih, w_hh, b_ih, b_hh = (p[k].tolist() for k in ("w_ih", "w_hh", "b_ih", "b_hh"))
    h, ys = h0.tolist(), []
    for x_t in x.tolist():
        y_t = []
        for b in range(len(x_t)):
            size = len(h[b])
            r = [_sigmoid(_affine(w_ih, b_ih, x_t[b], j) + _affine(w_hh, b_hh, h[b], j)) for j in range(size)]
            z = [_sigmoid(_affine(w_ih, b_ih, x_t[b], size + j) + _affine(w_hh, b_hh, h[b], size + j))
                 for j in range(size)]
            rh = [r[k] * h[b][k] for k in range(size)]
            n = [math.tanh(_affine(w_ih, b_ih, x_t[b], 2 * size + j) + _affine(w_hh, b_hh, rh, 2 * size + j))
                 for j in range(size)]
            y_t.append([(1 - z[j]) * n[j] + z[j] * h[b][j] for j in range(size)])
        h = y_t
        ys.append(y_t)
    return np.array(ys), np.array(h)


def _small_problem(case, seed):
    """B=2, H=3, T=3 for the scalar loops."""
    rng = np.random.default_rng(seed)
    module, options, _, _, _ = make_problem(case, rng)
    G = CELLS[CASES[case].cell].num_gates
    x = rng.standard_normal((3, 2, D))
    state0 = tuple(rng.standard_normal((2, 3)) for _ in range(STATES[module]))
    params = {"w_ih": rng.uniform(-0.5, 0.5, (G * 3, D)), "w_hh": rng.uniform(-0.5, 0.5, (G * 3, 3)),
              "b_ih": rng.uniform(-0.5, 0.5, G * 3), "b_hh": rng.uniform(-0.5, 0.5, G * 3)}
    if CASES[case].peephole:
        params["w_peep"] = rng.uniform(-1.0, 1.0, (len(CELLS[CASES[case].cell].peephole_gates), 3))
    return module, options, x, state0, params


def test_lstm_peephole_forward_matches_scalar_loop():
    module, options, x, (h0, c0), params = _small_problem("lstm_peephole", 11)
    y, (h_n, c_n), _ = module.forward(x, (h0, c0), params, None, False, **options)
    y_loop, h_loop, c_loop = scalar_lstm_peephole(x, h0, c0, params)
    assert_allclose(y, y_loop, rtol=1e-12, atol=1e-14)
    assert_allclose(h_n, h_loop, rtol=1e-12, atol=1e-14)
    assert_allclose(c_n, c_loop, rtol=1e-12, atol=1e-14)


def test_lstm_nf_peephole_forward_matches_scalar_loop():
    module, options, x, (h0, c0), params = _small_problem("lstm_nf_peephole", 13)
    y, (h_n, c_n), _ = module.forward(x, (h0, c0), params, None, False, **options)
    y_loop, h_loop, c_loop = scalar_lstm_peephole(x, h0, c0, params, forget_gate=False)
    assert_allclose(y, y_loop, rtol=1e-12, atol=1e-14)
    assert_allclose(h_n, h_loop, rtol=1e-12, atol=1e-14)
    assert_allclose(c_n, c_loop, rtol=1e-12, atol=1e-14)


def test_gru_reset_before_forward_matches_scalar_loop():
    module, options, x, (h0,), params = _small_problem("gru_reset_before", 12)
    y, (h_n,), _ = module.forward(x, (h0,), params, None, False, **options)
    y_loop, h_loop = scalar_gru_reset_before(x, h0, params)
    assert_allclose(y, y_loop, rtol=1e-12, atol=1e-14)
    assert_allclose(h_n, h_loop, rtol=1e-12, atol=1e-14)


# -- against PyTorch (the variants it has) ---------------------------------------------------------

TORCH_CASES = ["rnn_tanh", "rnn_relu", "lstm", "gru_reset_after"]


def _flip_within_lengths(lengths):
    """flip[t, b]: the step of sequence b that lands at t when each sequence is reversed within its
    own length (padded steps stay put). The permutation is its own inverse."""
    t = np.arange(T)[:, None]
    return np.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("lengths", [None, MIXED_LENGTHS], ids=["full", "mixed_lengths"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("case", TORCH_CASES)
def test_matches_torch_forward_and_gradients(case, bias, lengths, reverse):
    """reverse=True is compared with PyTorch run on each sequence flipped within its length."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(13)
    module, options, x, state0, params = make_problem(case, rng, bias=bias)
    dy, dstate_n = upstream_gradients(module, rng)
    lengths = as_lengths(lengths)

    torch_class = {rnn: torch.nn.RNN, lstm: torch.nn.LSTM, gru: torch.nn.GRU}[module]
    torch_options = {"nonlinearity": options["nonlinearity"]} if module is rnn else {}
    layer = torch_class(D, H, num_layers=1, bias=bias, dtype=torch.float64, **torch_options)
    layer.load_state_dict({f"{torch_name}_l0": torch.from_numpy(params[name])
                           for name, torch_name in [("w_ih", "weight_ih"), ("w_hh", "weight_hh"),
                                                    ("b_ih", "bias_ih"), ("b_hh", "bias_hh")]
                           if params[name] is not None})

    full = np.full(B, T, dtype=np.int64) if lengths is None else lengths
    order = _flip_within_lengths(full) if reverse else np.repeat(np.arange(T)[:, None], B, axis=1)
    batch = np.arange(B)[None, :]
    x_torch = torch.from_numpy(x[order, batch]).requires_grad_()
    state0_torch = [torch.from_numpy(s[None].copy()).requires_grad_() for s in state0]
    hx = tuple(state0_torch) if module is lstm else state0_torch[0]
    if lengths is None:
        y_torch, state_n_torch = layer(x_torch, hx)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(x_torch, torch.from_numpy(lengths), enforce_sorted=False)
        y_packed, state_n_torch = layer(packed, hx)
        y_torch, _ = torch.nn.utils.rnn.pad_packed_sequence(y_packed, total_length=T)
    state_n_torch = state_n_torch if module is lstm else (state_n_torch,)
    loss = torch.sum(torch.from_numpy(dy[order, batch]) * y_torch)
    loss = loss + sum(torch.sum(torch.from_numpy(ds[None]) * s) for ds, s in zip(dstate_n, state_n_torch))
    loss.backward()

    y, state_n, cache = module.forward(x, state0, params, lengths, reverse, **options)
    grads = zero_grads(params)
    dx, dstate0 = module.backward(dy, dstate_n, cache, grads)

    assert_allclose(y, y_torch.detach().numpy()[order, batch], rtol=1e-9, atol=1e-12)
    for k, s in enumerate(state_n):
        assert_allclose(s, state_n_torch[k].detach().numpy()[0], rtol=1e-9, atol=1e-12, err_msg=f"state_n[{k}]")
    assert_allclose(dx, x_torch.grad.numpy()[order, batch], rtol=1e-9, atol=1e-12)
    for k, ds in enumerate(dstate0):
        assert_allclose(ds, state0_torch[k].grad.numpy()[0], rtol=1e-9, atol=1e-12, err_msg=f"dstate0[{k}]")
    torch_params = dict(layer.named_parameters())
    for name, torch_name in [("w_ih", "weight_ih"), ("w_hh", "weight_hh"), ("b_ih", "bias_ih"), ("b_hh", "bias_hh")]:
        if params[name] is not None:
            assert_allclose(grads[name], torch_params[f"{torch_name}_l0"].grad.numpy(), rtol=1e-9, atol=1e-12,
                            err_msg=name)
