"""The public layers (docs/layers.md): driver semantics, gradients and PyTorch parity, per backend."""
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import fastrnn
from fastrnn import gradcheck
from cases import CASES, make_layer

BACKENDS = fastrnn.available_backends()
CELLS = CASES  # layer tests run every case of the shared table


def make(cell, input_size=3, hidden_size=4, backend="reference", **options):
    return make_layer(cell, input_size, hidden_size, backend=backend, **options)


def random_state(layer, batch, rng):
    shape = (layer.num_layers * layer.num_directions, batch, layer.hidden_size)
    parts = tuple(rng.standard_normal(shape).astype(layer.dtype) for _ in layer.state_names)
    return parts if len(parts) > 1 else parts[0]


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_stacked_bidirectional_gradients_match_finite_differences(cell, backend):
    rng = np.random.default_rng(0)
    layer = make(cell, num_layers=2, bidirectional=True, dropout=0.3, dtype=np.float64,
                 backend=backend, seed=1)
    steps, batch = 4, 3
    x = rng.standard_normal((steps, batch, 3))
    state = random_state(layer, batch, rng)
    lengths = np.array([2, 4, 1])
    dy = rng.standard_normal((steps, batch, 8))
    dstate = tuple(rng.standard_normal(s.shape) for s in as_tuple(state))

    def loss():
        # The dropout mask comes from the layer's generator: re-seed it so each call draws the same.
        layer._rng = np.random.default_rng(5)
        y, state_n = layer(x, state, lengths)
        return np.sum(dy * y) + sum(np.sum(d * s) for d, s in zip(dstate, as_tuple(state_n)))

    loss()
    dx, dstate0 = layer.backward(dy, dstate if len(dstate) > 1 else dstate[0])
    arrays = {"x": x, **{f"state{k}": s for k, s in enumerate(as_tuple(state))}, **layer.params}
    analytic = {"x": dx, **{f"state{k}": s for k, s in enumerate(as_tuple(dstate0))}, **layer.grads}
    gradcheck(loss, arrays, analytic, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_chunks_with_carried_state_equal_one_pass(cell, backend):
    """Chunks carrying state forward (truncated BPTT's loop) and, re-running chunk 1's forward,
    dstate back: together exactly one full pass."""
    rng = np.random.default_rng(2)
    full = make(cell, num_layers=2, bidirectional=False, dtype=np.float64, backend=backend, seed=3)
    chunked = make(cell, num_layers=2, bidirectional=False, dtype=np.float64, backend=backend, seed=3)
    x = rng.standard_normal((6, 2, 3))
    dy = rng.standard_normal((6, 2, 4))
    y, _ = full(x)
    dx, _ = full.backward(dy)

    y1, state1 = chunked(x[:4])
    y2, _ = chunked(x[4:], state1)
    dx2, dstate1 = chunked.backward(dy[4:])
    chunked(x[:4])
    dx1, _ = chunked.backward(dy[:4], dstate1)

    assert_allclose(np.concatenate([y1, y2]), y, rtol=1e-12, atol=1e-14)
    assert_allclose(np.concatenate([dx1, dx2]), dx, rtol=1e-12, atol=1e-14)
    for name in full.grads:
        assert_allclose(chunked.grads[name], full.grads[name], rtol=1e-12, atol=1e-14, err_msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_accumulate_until_zero_grad(backend):
    rng = np.random.default_rng(4)
    layer = make("lstm", dtype=np.float64, backend=backend, seed=0)
    x, dy = rng.standard_normal((5, 2, 3)), rng.standard_normal((5, 2, 4))
    layer(x)
    layer.backward(dy)
    once = {name: grad.copy() for name, grad in layer.grads.items()}
    assert all(np.any(grad != 0) for grad in once.values())
    layer(x)
    layer.backward(dy)
    for name, grad in layer.grads.items():
        assert_allclose(grad, 2 * once[name], rtol=1e-12, err_msg=name)
    layer.zero_grad()
    assert all(not np.any(grad) for grad in layer.grads.values())


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_first_is_the_transposed_layout(backend):
    rng = np.random.default_rng(5)
    time_major = make("gru_reset_after", num_layers=2, bidirectional=True, dtype=np.float64, backend=backend, seed=9)
    batch_first = make("gru_reset_after", num_layers=2, bidirectional=True, dtype=np.float64, backend=backend, seed=9,
                       batch_first=True)
    x, dy = rng.standard_normal((5, 3, 3)), rng.standard_normal((5, 3, 8))
    lengths = [5, 2, 3]
    y, h = time_major(x, lengths=lengths)
    dx, dh0 = time_major.backward(dy)
    y_bf, h_bf = batch_first(x.transpose(1, 0, 2), lengths=lengths)
    dx_bf, dh0_bf = batch_first.backward(dy.transpose(1, 0, 2))
    assert_allclose(y_bf, y.transpose(1, 0, 2), rtol=1e-13)
    assert_allclose(h_bf, h, rtol=1e-13)
    assert_allclose(dx_bf, dx.transpose(1, 0, 2), rtol=1e-13)
    assert_allclose(dh0_bf, dh0, rtol=1e-13)


def test_same_seed_gives_same_weights_and_float32_matches_float64():
    a = fastrnn.LSTM(3, 5, num_layers=2, bidirectional=True, backend="reference", seed=7)
    b = fastrnn.LSTM(3, 5, num_layers=2, bidirectional=True, backend="reference", seed=7)
    c = fastrnn.LSTM(3, 5, num_layers=2, bidirectional=True, backend="reference", seed=8)
    d = fastrnn.LSTM(3, 5, num_layers=2, bidirectional=True, backend="reference", seed=7, dtype=np.float64)
    e = fastrnn.LSTM(3, 5, num_layers=2, bidirectional=True, backend="reference",
                     seed=np.random.default_rng(7))
    for name in a.params:
        assert_array_equal(a.params[name], b.params[name])
        assert_array_equal(a.params[name], e.params[name])
        assert not np.array_equal(a.params[name], c.params[name])
        assert_allclose(d.params[name], a.params[name], rtol=1e-7)
        assert a.params[name].dtype == np.float32 and d.params[name].dtype == np.float64


def test_initialisation_is_uniform_within_one_over_sqrt_hidden():
    layer = fastrnn.GRU(10, 16, backend="reference", seed=0)
    weights = np.concatenate([p.ravel() for p in layer.params.values()])
    assert np.abs(weights).max() <= 0.25
    assert np.abs(weights).max() > 0.24  # spread over the whole interval, not a narrower one
    assert abs(weights.mean()) < 0.02


@pytest.mark.parametrize("cell,state_shapes", [
    ("lstm", 2), ("gru_reset_after", 1), ("rnn_tanh", 1),
])
def test_parameter_names_and_shapes_follow_pytorch(cell, state_shapes):
    layer = make(cell, input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
    gates = layer.num_gates * 4
    expected = {}
    for k, input_size in ((0, 3), (1, 8)):
        for suffix in ("", "_reverse"):
            expected[f"weight_ih_l{k}{suffix}"] = (gates, input_size)
            expected[f"weight_hh_l{k}{suffix}"] = (gates, 4)
            expected[f"bias_ih_l{k}{suffix}"] = (gates,)
            expected[f"bias_hh_l{k}{suffix}"] = (gates,)
    assert {name: p.shape for name, p in layer.params.items()} == expected
    assert list(layer.params) == list(expected)  # PyTorch's order
    assert {name: g.shape for name, g in layer.grads.items()} == expected
    assert len(layer.state_names) == state_shapes


def test_bias_false_has_no_bias_parameters_and_peephole_adds_its_weights():
    layer = fastrnn.LSTM(3, 4, bias=False, peephole=True, backend="reference")
    assert sorted(layer.params) == ["weight_hh_l0", "weight_ih_l0", "weight_peephole_l0"]
    assert layer.params["weight_peephole_l0"].shape == (3, 4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_eval_mode_dropout_equals_no_dropout_and_training_mode_drops(backend):
    rng = np.random.default_rng(6)
    dropped = make("lstm", num_layers=3, dropout=0.5, hidden_size=32, backend=backend, seed=4)
    plain = make("lstm", num_layers=3, dropout=0.0, hidden_size=32, backend=backend, seed=4)
    x = rng.standard_normal((7, 5, 3)).astype(np.float32)
    assert dropped.training
    y_train, _ = dropped(x)
    y_plain, _ = plain(x)
    assert not np.allclose(y_train, y_plain, atol=1e-3)
    y_eval, _ = dropped.eval()(x)
    assert_array_equal(y_eval, y_plain)
    assert dropped.train() is dropped and dropped.training


def test_dropout_mask_zeroes_the_expected_share_and_scales_the_rest():
    layer = fastrnn.RNN(2, 64, num_layers=2, dropout=0.25, backend="reference", seed=0)
    layer(np.ones((50, 20, 2), np.float32))
    mask = layer._cache[1][1]
    assert abs(np.mean(mask == 0) - 0.25) < 0.02
    assert_allclose(mask[mask != 0], 1 / 0.75, rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lengths_zero_padded_outputs_and_state_at_each_last_step(backend):
    rng = np.random.default_rng(8)
    layer = make("lstm", num_layers=2, bidirectional=True, dtype=np.float64, backend=backend, seed=2)
    x = rng.standard_normal((6, 3, 3))
    lengths = np.array([3, 6, 1])
    y, (h, c) = layer(x, lengths=lengths)
    for b, length in enumerate(lengths):
        assert not np.any(y[length:, b])
        y_b, (h_b, c_b) = layer(x[:length, b:b + 1])
        assert_allclose(y[:length, b:b + 1], y_b, rtol=1e-12, atol=1e-14)
        assert_allclose(h[:, b:b + 1], h_b, rtol=1e-12, atol=1e-14)
        assert_allclose(c[:, b:b + 1], c_b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "gru_reset_after", "rnn_tanh"])
def test_inputs_are_not_modified_and_outputs_are_not_overwritten(cell, bidirectional, backend):
    rng = np.random.default_rng(9)
    layer = make(cell, num_layers=1, bidirectional=bidirectional, backend=backend, seed=0)
    dirs = layer.num_directions
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    state = random_state(layer, 2, rng)
    dy = rng.standard_normal((4, 2, 4 * dirs)).astype(np.float32)
    dstate = tuple(rng.standard_normal(s.shape).astype(np.float32) for s in as_tuple(state))
    dstate = dstate if len(dstate) > 1 else dstate[0]
    inputs = (x, *as_tuple(state), dy, *as_tuple(dstate))
    copies = [a.copy() for a in inputs]
    y, state_n = layer(x, state)
    dx, dstate0 = layer.backward(dy, dstate)
    for original, copy in zip(inputs, copies):
        assert_array_equal(original, copy)
    returned = (y, *as_tuple(state_n), dx, *as_tuple(dstate0))
    kept = [a.copy() for a in returned]
    layer(x * 2, tuple(s * 2 for s in as_tuple(state)) if len(as_tuple(state)) > 1 else state * 2)
    layer.backward(dy * 2, tuple(d * 2 for d in as_tuple(dstate)) if len(as_tuple(dstate)) > 1 else dstate * 2)
    for array, copy in zip(returned, kept):
        assert_array_equal(array, copy)


def test_params_and_grads_entries_cannot_be_replaced():
    layer = fastrnn.LSTM(3, 4, backend="reference", seed=0)
    with pytest.raises(TypeError):
        layer.params["weight_ih_l0"] = np.zeros((16, 3), np.float32)
    with pytest.raises(TypeError):
        layer.grads["weight_ih_l0"] = np.zeros((16, 3), np.float32)
    layer.params["weight_ih_l0"][...] = 0  # writing into the array is how parameters change
    y, _ = layer(np.ones((2, 1, 3), np.float32))
    layer.params["weight_ih_l0"][...] = 1
    assert not np.allclose(layer(np.ones((2, 1, 3), np.float32))[0], y)


def test_other_float_dtypes_and_layouts_are_converted():
    layer = fastrnn.RNN(3, 4, dtype=np.float32, backend="reference", seed=0)
    x = np.random.default_rng(0).standard_normal((3, 5, 2)).transpose(1, 2, 0)  # float64, strided
    y, h = layer(x)
    y_ref, h_ref = layer(np.ascontiguousarray(x, np.float32))
    assert y.dtype == np.float32 and h.dtype == np.float32
    assert_array_equal(y, y_ref)
    assert_array_equal(h, h_ref)


def test_backward_without_forward_raises():
    layer = fastrnn.GRU(3, 4, backend="reference")
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(np.zeros((2, 1, 4), np.float32))
    layer(np.ones((2, 1, 3), np.float32))
    layer.backward(np.ones((2, 1, 4), np.float32))
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(np.ones((2, 1, 4), np.float32))


@pytest.mark.parametrize("call,error,pattern", [
    (lambda l: l(np.ones((2, 1, 1, 3), np.float32)), ValueError, r"x must have shape \(\*, \*, 3\), got \(2, 1, 1, 3\)"),
    (lambda l: l(np.ones((2, 1, 5), np.float32)), ValueError, r"x must have shape \(\*, \*, 3\), got \(2, 1, 5\)"),
    (lambda l: l(np.ones((2, 1, 3), np.int64)), TypeError, r"x must be a floating-point array, got dtype int64"),
    (lambda l: l(np.ones((0, 1, 3), np.float32)), ValueError, r"x must have at least one step"),
    (lambda l: l(np.ones((2, 1, 3)), np.ones((1, 1, 4))), TypeError, r"state must be a tuple \(h, c\)"),
    (lambda l: l(np.ones((2, 1, 3)), (np.ones((1, 2, 4)), np.ones((1, 1, 4)))), ValueError,
     r"state\[0\] \(h\) must have shape \(1, 1, 4\), got \(1, 2, 4\)"),
    (lambda l: l(np.ones((2, 2, 3)), lengths=[1, 3]), ValueError, r"lengths must be between 1 and T=2"),
    (lambda l: l(np.ones((2, 2, 3)), lengths=[0, 1]), ValueError, r"lengths must be between 1 and T=2"),
    (lambda l: l(np.ones((2, 2, 3)), lengths=[1, 2, 2]), ValueError, r"lengths must have shape \(2,\)"),
    (lambda l: l(np.ones((2, 2, 3)), lengths=[1.0, 2.0]), TypeError, r"lengths must be integers"),
    (lambda l: l(np.ones((2, 2, 3)), lengths=[[1], [2, 2]]), ValueError, r"lengths must be a rectangular array"),
    (lambda l: l([[[1.0, 2.0, 3.0]], [[1.0, 2.0]]]), ValueError, r"x must be a rectangular array"),
])
def test_bad_forward_input_raises_naming_the_argument(call, error, pattern):
    layer = fastrnn.LSTM(3, 4, backend="reference")
    with pytest.raises(error, match=pattern):
        call(layer)


def test_bad_backward_input_raises_naming_the_argument():
    layer = fastrnn.GRU(3, 4, backend="reference")
    layer(np.ones((2, 1, 3), np.float32))
    with pytest.raises(ValueError, match=r"dy must have shape \(2, 1, 4\), got \(2, 1, 3\)"):
        layer.backward(np.ones((2, 1, 3), np.float32))
    with pytest.raises(ValueError, match=r"dstate must have shape \(1, 1, 4\), got \(2, 1, 4\)"):
        layer.backward(np.ones((2, 1, 4), np.float32), np.ones((2, 1, 4)))


@pytest.mark.parametrize("make_layer,error,pattern", [
    (lambda: fastrnn.LSTM(3, 4, dtype=np.float16), TypeError, "dtype must be numpy.float32 or numpy.float64"),
    (lambda: fastrnn.LSTM(3, 4, dtype="int32"), TypeError, "dtype"),
    (lambda: fastrnn.LSTM(3, 4, backend="gpu"), ValueError, "backend must be one of"),
    (lambda: fastrnn.RNN(3, 4, nonlinearity="sigmoid"), ValueError, "nonlinearity must be 'tanh' or 'relu'"),
    (lambda: fastrnn.GRU(3, 4, peephole=True), TypeError, "peephole"),
    (lambda: fastrnn.RNN(3, 4, peephole=True), TypeError, "peephole"),
    (lambda: fastrnn.LSTM(0, 4), ValueError, "input_size must be >= 1"),
    (lambda: fastrnn.LSTM(3, 4.0), TypeError, "hidden_size must be an int"),
    (lambda: fastrnn.LSTM(3, 4, num_layers=2, dropout=1.5), ValueError, r"dropout must be in \[0, 1\]"),
    (lambda: fastrnn.LSTM(3, 4, seed=1.5), TypeError, "seed must be None, an int or a numpy.random.Generator"),
    (lambda: fastrnn.LSTM(3, 4, seed=-1), ValueError, "seed must be >= 0"),
])
def test_bad_construction_raises(make_layer, error, pattern):
    with pytest.raises(error, match=pattern):
        make_layer()


def test_load_state_dict_checks_every_name_and_shape():
    layer = fastrnn.LSTM(3, 4, num_layers=2, backend="reference", seed=0)
    other = fastrnn.LSTM(3, 4, num_layers=2, backend="reference", seed=1)
    layer.load_state_dict(other.state_dict())
    for name in layer.params:
        assert_array_equal(layer.params[name], other.params[name])
    state = other.state_dict()
    state["weight_hh_l1"] = state["weight_hh_l1"][:, :3]
    with pytest.raises(ValueError, match=r"weight_hh_l1.*\(16, 4\), got \(16, 3\)"):
        layer.load_state_dict(state)
    state = other.state_dict()
    del state["bias_ih_l0"]
    with pytest.raises(KeyError, match="bias_ih_l0"):
        layer.load_state_dict(state)
    with pytest.raises(KeyError, match="weight_ih_l2"):
        layer.load_state_dict({**other.state_dict(), "weight_ih_l2": np.zeros((16, 4))})


def test_state_dict_returns_copies():
    layer = fastrnn.RNN(3, 4, backend="reference", seed=0)
    state = layer.state_dict()
    state["weight_ih_l0"][...] = 0
    assert np.any(layer.params["weight_ih_l0"])


# -- PyTorch parity --------------------------------------------------------------------------

TORCH_CELLS = ["lstm", "gru_reset_after", "rnn_tanh", "rnn_relu"]


def torch_layer(torch, cell, layer):
    cls = {"lstm": torch.nn.LSTM, "gru_reset_after": torch.nn.GRU}.get(cell, torch.nn.RNN)
    options = {"nonlinearity": "relu"} if cell == "rnn_relu" else {}
    module = cls(layer.input_size, layer.hidden_size, layer.num_layers, bias=layer.bias,
                 batch_first=layer.batch_first, bidirectional=layer.bidirectional, **options).double()
    module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in layer.params.items()})
    return module


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", TORCH_CELLS)
@pytest.mark.parametrize("bidirectional,batch_first,bias,use_lengths", [
    (False, False, True, False),
    (True, False, True, True),
    (True, True, False, True),
    (False, True, True, True),
])
def test_matches_torch_outputs_state_and_all_gradients(cell, backend, bidirectional, batch_first, bias,
                                                       use_lengths):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(10)
    steps, batch = 5, 4
    layer = make(cell, input_size=3, hidden_size=6, num_layers=2, bidirectional=bidirectional,
                 batch_first=batch_first, bias=bias, dtype=np.float64, backend=backend, seed=11)
    dirs = layer.num_directions
    x_shape = (batch, steps, 3) if batch_first else (steps, batch, 3)
    x = rng.standard_normal(x_shape)
    state = random_state(layer, batch, rng)
    lengths = np.array([3, 5, 1, 4]) if use_lengths else None
    y_shape = x_shape[:2] + (6 * dirs,)
    dy = rng.standard_normal(y_shape)
    dstate = tuple(rng.standard_normal(s.shape) for s in as_tuple(state))

    y, state_n = layer(x, state, lengths)
    dx, dstate0 = layer.backward(dy, dstate if len(dstate) > 1 else dstate[0])

    module = torch_layer(torch, cell, layer)
    x_t = torch.tensor(x, requires_grad=True)
    state_t = tuple(torch.tensor(s, requires_grad=True) for s in as_tuple(state))
    if use_lengths:
        packed = torch.nn.utils.rnn.pack_padded_sequence(x_t, torch.tensor(lengths), batch_first=batch_first,
                                                         enforce_sorted=False)
        out, state_n_t = module(packed, state_t if len(state_t) > 1 else state_t[0])
        y_t, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=batch_first, total_length=steps)
    else:
        y_t, state_n_t = module(x_t, state_t if len(state_t) > 1 else state_t[0])
    state_n_t = state_n_t if isinstance(state_n_t, tuple) else (state_n_t,)
    loss = (y_t * torch.from_numpy(dy)).sum() + sum(
        (s * torch.from_numpy(d)).sum() for s, d in zip(state_n_t, dstate))
    loss.backward()

    tol = {"rtol": 1e-9, "atol": 1e-12}
    assert_allclose(y, y_t.detach().numpy(), **tol)
    for ours, theirs in zip(as_tuple(state_n), state_n_t):
        assert_allclose(ours, theirs.detach().numpy(), **tol)
    assert_allclose(dx, x_t.grad.numpy(), **tol)
    for ours, theirs in zip(as_tuple(dstate0), state_t):
        assert_allclose(ours, theirs.grad.numpy(), **tol)
    for name, param in module.named_parameters():
        assert_allclose(layer.grads[name], param.grad.numpy(), err_msg=name, **tol)


def test_params_and_grads_are_dicts_updated_in_place():
    layer = fastrnn.GRU(3, 4, backend="reference", seed=0)
    assert isinstance(layer.params, dict) and isinstance(layer.grads, dict)
    weight = layer.grads["weight_hh_l0"]
    layer.grads["weight_hh_l0"] += 1.5  # the in-place idiom stores back the same array
    assert layer.grads["weight_hh_l0"] is weight and np.all(weight == 1.5)
    with pytest.raises(TypeError, match="cannot be added, replaced or removed"):
        del layer.params["bias_ih_l0"]


def test_a_cell_without_compiled_kernels_falls_back_alone(monkeypatch):
    from dataclasses import replace

    from fastrnn import _backends, _cells

    if "cython" not in fastrnn.available_backends("lstm"):
        pytest.skip("the compiled kernels are not built")
    monkeypatch.setitem(_cells.CELLS, "gru", replace(_cells.CELLS["gru"], kernels="fastrnn._kernels.missing"))
    monkeypatch.setattr(_backends, "_warned_fallback", set())
    assert fastrnn.available_backends("gru") == ["reference"]
    assert fastrnn.available_backends("lstm") == ["cython", "reference"]
    with pytest.warns(RuntimeWarning, match="fastrnn._kernels.missing"):
        assert fastrnn.GRU(3, 4).backend == "reference"
    assert fastrnn.LSTM(3, 4).backend == "cython"
    assert fastrnn.RNN(3, 4).backend == "cython"
    with pytest.raises(ValueError, match="gru cell has no compiled kernels"):
        fastrnn.GRU(3, 4, backend="cython")
