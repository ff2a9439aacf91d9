"""The gradient-flow tools: the opt-in record of ‖∂J/∂h_t‖ (‖∂J/∂c_t‖) in backward, gate
saturation statistics, and the init options recurrent_init and forget_bias (docs/layers.md §13)."""
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import fastrnn
from fastrnn._backends import available_backends
from fastrnn._cells import CELLS
from tests.cases import CASES, make_layer, reference

BACKENDS = available_backends()
TOL = {np.float64: dict(rtol=1e-12, atol=1e-13), np.float32: dict(rtol=2e-5, atol=1e-6)}
T, B, D, H = 7, 3, 4, 5


def _data(rng, layer, steps=T, batch=B, dtype=np.float64):
    dirs = layer.num_directions
    x = rng.standard_normal((steps, batch, layer.input_size)).astype(dtype)
    dy = rng.standard_normal((steps, batch, dirs * layer.hidden_size)).astype(dtype)
    shape = (layer.num_layers * dirs, batch, layer.hidden_size)
    dstate = tuple(rng.standard_normal(shape).astype(dtype) for _ in layer.state_names)
    return x, dy, dstate if len(dstate) > 1 else dstate[0]


def _run(layer, x, dy, dstate, lengths=None):
    y, state = layer.forward(x, lengths=lengths)
    dx, dstate0 = layer.backward(dy, dstate)
    return y, state, dx, dstate0, {k: v.copy() for k, v in layer.grads.items()}


def _flat(values):
    out = []
    for value in values:
        if isinstance(value, dict):
            out += [value[k] for k in sorted(value)]
        elif isinstance(value, tuple):
            out += list(value)
        else:
            out.append(value)
    return out


# -- the record ------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_record_changes_no_result(case, backend, dtype):
    rng = np.random.default_rng(1)
    results = []
    for record in (False, True):
        layer = make_layer(case, D, H, num_layers=2, bidirectional=True, dtype=dtype,
                           backend=backend, seed=3)
        layer.record_gradient_norms = record
        x, dy, dstate = _data(np.random.default_rng(1), layer, dtype=dtype)
        results.append(_flat(_run(layer, x, dy, dstate, lengths=[T, 2, 5])))
        assert (layer.gradient_norms is not None) == record
    for off, on in zip(*results):
        assert_array_equal(on, off)
    del rng


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_record_backends_agree(case, dtype):
    if "cython" not in available_backends(CASES[case].cell):
        pytest.skip("compiled kernels not built")
    records = []
    for backend in ("reference", "cython"):
        layer = make_layer(case, D, H, num_layers=2, bidirectional=True, dtype=dtype,
                           backend=backend, seed=5)
        layer.record_gradient_norms = True
        x, dy, dstate = _data(np.random.default_rng(2), layer, dtype=dtype)
        _run(layer, x, dy, dstate, lengths=[4, T, 1])
        records.append(layer.gradient_norms)
    assert sorted(records[0]) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for unit, norms in records[0].items():
        assert sorted(norms) == sorted(CELLS[CASES[case].cell].state_names)
        for name, values in norms.items():
            assert values.shape == (T,) and values.dtype == np.float64
            assert np.all(values > 0)
            assert_allclose(records[1][unit][name], values, **TOL[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_one_step_record_is_the_norm_of_dy_plus_dstate(case, backend):
    # T = 1: dL/dh_0 is dy[0] + dstate_n[h], nothing else reaches it.
    layer = make_layer(case, D, H, dtype=np.float64, backend=backend, seed=0)
    layer.record_gradient_norms = True
    x, dy, dstate = _data(np.random.default_rng(4), layer, steps=1)
    _run(layer, x, dy, dstate)
    dh_n = dstate[0] if isinstance(dstate, tuple) else dstate
    assert_allclose(layer.gradient_norms[0, 0]["h"], [np.linalg.norm(dy[0] + dh_n[0])], rtol=1e-12)


CELL_CLASSES = {"lstm": fastrnn.LSTMCell, "gru_reset_after": fastrnn.GRUCell, "rnn_tanh": fastrnn.RNNCell}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", sorted(CELL_CLASSES))
def test_record_of_h_matches_a_step_by_step_run_with_padding(cell, backend):
    # Run each sequence alone, one step at a time with the step cell: the gradient it is given
    # at step t is dL/dh_t (dy[t] plus what step t+1 returned). Padded steps add nothing.
    lengths = [T, 3, 5]
    layer = make_layer(cell, D, H, dtype=np.float64, backend=backend, seed=7)
    layer.record_gradient_norms = True
    x, dy, dstate = _data(np.random.default_rng(5), layer)
    _run(layer, x, dy, dstate, lengths=lengths)

    step = CELL_CLASSES[cell](D, H, dtype=np.float64, backend=backend)
    for name, value in layer.state_dict().items():
        step.params[name.removesuffix("_l0")][...] = value
    expected = np.zeros(T)
    two_states = isinstance(dstate, tuple)
    for b, length in enumerate(lengths):
        state = None
        for t in range(length):
            state = step.forward(x[t, b:b + 1], state)
        dh = dstate[0][0, b:b + 1] if two_states else dstate[0, b:b + 1]
        dc = dstate[1][0, b:b + 1] if two_states else None
        for t in reversed(range(length)):
            total = dy[t, b:b + 1] + dh
            expected[t] += np.sum(total ** 2)
            _, back = step.backward((total, dc) if two_states else total)
            dh, dc = back if two_states else (back, None)
    assert_allclose(layer.gradient_norms[0, 0]["h"], np.sqrt(expected), rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", sorted(CELL_CLASSES))
def test_record_matches_torch_autograd(cell, backend):
    # torch's autograd gives the whole dL/dh_t and dL/dc_t (the latter through h_t = o tanh(c_t)
    # as well) of a step-by-step run of its cells with the same weights.
    torch = pytest.importorskip("torch")
    layer = make_layer(cell, D, H, dtype=np.float64, backend=backend, seed=8)
    layer.record_gradient_norms = True
    x, dy, dstate = _data(np.random.default_rng(6), layer)
    _run(layer, x, dy, dstate)

    cls = {"lstm": torch.nn.LSTMCell, "gru_reset_after": torch.nn.GRUCell,
           "rnn_tanh": torch.nn.RNNCell}[cell]
    module = cls(D, H).double()
    with torch.no_grad():
        for name, value in layer.state_dict().items():
            getattr(module, name.removesuffix("_l0")).copy_(torch.from_numpy(value))
    two_states = isinstance(dstate, tuple)
    state = (torch.zeros(B, H, dtype=torch.float64),) * (2 if two_states else 1)
    hs, cs = [], []
    for t in range(T):
        out = module(torch.from_numpy(x[t]), state if two_states else state[0])
        state = out if two_states else (out,)
        for part, kept in zip(state, (hs, cs)):
            part.retain_grad()
            kept.append(part)
    loss = sum((h * torch.from_numpy(dy[t])).sum() for t, h in enumerate(hs))
    finals = dstate if two_states else (dstate,)
    loss = loss + sum((part * torch.from_numpy(d[0])).sum() for part, d in zip(state, finals))
    loss.backward()
    assert_allclose(layer.gradient_norms[0, 0]["h"], [h.grad.norm().item() for h in hs], rtol=1e-10)
    if two_states:
        assert_allclose(layer.gradient_norms[0, 0]["c"], [c.grad.norm().item() for c in cs], rtol=1e-10)


def test_record_starts_empty_and_follows_the_flag():
    layer = fastrnn.GRU(D, H, seed=0)
    assert layer.record_gradient_norms is False and layer.gradient_norms is None
    x, dy, dstate = _data(np.random.default_rng(0), layer, dtype=np.float32)
    layer.record_gradient_norms = True
    _run(layer, x, dy, dstate)
    first = layer.gradient_norms
    layer.record_gradient_norms = False
    _run(layer, x, dy * 2, dstate)
    assert layer.gradient_norms is first  # the last recorded backward stays


# -- gate statistics -------------------------------------------------------------------------


def _expected_statistics(case, layer, x, lengths):
    """From the reference's own forward and gates, with the thresholds written out here."""
    cell, options, _ = CASES[case]
    module = reference(cell)
    params = layer._unit_params[0]
    state0 = tuple(np.zeros((x.shape[1], H)) for _ in CELLS[cell].state_names)
    lengths = None if lengths is None else np.asarray(lengths, np.int64)
    _, _, cache = module.forward(x, state0, params, lengths, False, **options)
    gates = module.gate_activations(cache)
    valid = np.ones((T, x.shape[1]), bool) if lengths is None else np.arange(T)[:, None] < lengths
    tanh_gate = {"lstm": "g", "lstm_nf": "g", "gru": "n", "rnn": "h"}[cell]
    expected = {}
    for k, gate in enumerate(CELLS[cell].gates):
        values = gates[:, k][valid]
        if gate != tanh_gate:
            flat = (values < 0.05) | (values > 0.95)
        elif options.get("nonlinearity") == "relu":
            flat = values == 0
        else:
            flat = np.abs(values) > 0.95
        expected[gate] = (flat.mean(), values.mean())
    return expected


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_gate_statistics_match_the_reference_gates(case, backend):
    # Large weights, so that a good share of the gates saturate.
    layer = make_layer(case, D, H, dtype=np.float64, backend=backend, seed=9)
    for value in layer.params.values():
        value *= 6
    x = np.random.default_rng(7).standard_normal((T, B, D))
    lengths = [T, 2, 4]
    layer.forward(x, lengths=lengths)
    stats = layer.gate_statistics()
    assert list(stats) == [(0, 0)]
    expected = _expected_statistics(case, layer, x, lengths)
    assert list(stats[0, 0]) == list(expected)
    assert any(0 < fraction < 1 for fraction, _ in expected.values())
    for gate, (fraction, mean) in expected.items():
        assert stats[0, 0][gate]["saturated"] == pytest.approx(fraction, abs=1e-12)
        assert stats[0, 0][gate]["mean"] == pytest.approx(mean, abs=1e-12)


def test_gate_statistics_need_a_forward_cache():
    layer = fastrnn.LSTM(D, H, seed=0)
    with pytest.raises(RuntimeError, match="gate_statistics"):
        layer.gate_statistics()
    x = np.zeros((T, B, D), np.float32)
    with fastrnn.no_grad():
        layer.forward(x)
    with pytest.raises(RuntimeError, match="no_grad"):
        layer.gate_statistics()
    y, _ = layer.forward(x)
    layer.backward(np.zeros_like(y))
    with pytest.raises(RuntimeError, match="before backward"):
        layer.gate_statistics()


def test_forget_bias_raises_the_forget_gate():
    x = np.random.default_rng(0).standard_normal((T, B, D))
    means = []
    for forget_bias in (0.0, 3.0):
        layer = fastrnn.LSTM(D, H, dtype=np.float64, seed=1, forget_bias=forget_bias)
        layer.forward(x)
        means.append(layer.gate_statistics()[0, 0]["f"]["mean"])
    assert means[0] < 0.7 < 0.9 < means[1]


# -- init options ----------------------------------------------------------------------------

LAYER_CLASSES = {"lstm": (fastrnn.LSTM, 4), "gru": (fastrnn.GRU, 3), "rnn": (fastrnn.RNN, 1)}


def _default_draw(seed, G, num_layers=1, dirs=1, input_size=D, hidden_size=H):
    """PyTorch-named parameters as docs/math.md §2 draws them: U(±1/√H) in the layer's order."""
    rng = np.random.default_rng(seed)
    bound = 1 / np.sqrt(hidden_size)
    params = {}
    for layer in range(num_layers):
        for direction in range(dirs):
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            d_in = input_size if layer == 0 else hidden_size * dirs
            for name, shape in (("weight_ih", (G * hidden_size, d_in)),
                                ("weight_hh", (G * hidden_size, hidden_size)),
                                ("bias_ih", (G * hidden_size,)), ("bias_hh", (G * hidden_size,))):
                params[name + suffix] = rng.uniform(-bound, bound, shape)
    return params


@pytest.mark.parametrize("cell", sorted(LAYER_CLASSES))
def test_default_init_is_unchanged(cell):
    cls, G = LAYER_CLASSES[cell]
    expected = _default_draw(11, G, num_layers=2, dirs=2)
    for options in ({}, {"recurrent_init": "uniform"}):
        layer = cls(D, H, 2, bidirectional=True, dtype=np.float64, seed=11, **options)
        assert list(layer.params) == list(expected)
        for name, value in expected.items():
            assert_array_equal(layer.params[name], value)


@pytest.mark.parametrize("cell", sorted(LAYER_CLASSES))
def test_orthogonal_recurrent_blocks(cell):
    cls, G = LAYER_CLASSES[cell]
    expected = _default_draw(12, G, num_layers=2, dirs=2)
    layer = cls(D, H, 2, bidirectional=True, dtype=np.float64, seed=12, recurrent_init="orthogonal")
    blocks = []
    for name, value in layer.params.items():
        if name.startswith("weight_hh"):
            for k in range(G):
                q = value[k * H:(k + 1) * H]
                assert_allclose(q.T @ q, np.eye(H), atol=1e-12)
                assert_allclose(q @ q.T, np.eye(H), atol=1e-12)
                blocks.append(q)
        else:  # drawn after every other parameter: those are the default draw
            assert_array_equal(value, expected[name])
    assert len(blocks) == 4 * G
    for first, second in zip(blocks, blocks[1:]):
        assert not np.allclose(first, second)
    assert "recurrent_init='orthogonal'" in repr(layer)


def test_forget_bias_lands_in_the_forget_rows_of_bias_ih():
    expected = _default_draw(13, 4, num_layers=2)
    layer = fastrnn.LSTM(D, H, 2, dtype=np.float64, seed=13, forget_bias=1.5)
    for name, value in layer.params.items():
        want = expected[name].copy()
        if name.startswith("bias_ih"):
            want[H:2 * H] += 1.5  # rows i, f, g, o: f is the second block
        assert_array_equal(value, want)
    assert "forget_bias=1.5" in repr(layer)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cells_take_the_init_options(backend):
    rng = np.random.default_rng(14)
    bound = 1 / np.sqrt(H)
    draw = {name: rng.uniform(-bound, bound, shape)
            for name, shape in (("weight_ih", (4 * H, D)), ("weight_hh", (4 * H, H)),
                                ("bias_ih", (4 * H,)), ("bias_hh", (4 * H,)))}
    cell = fastrnn.LSTMCell(D, H, dtype=np.float64, backend=backend, seed=14, forget_bias=1.0)
    for name, value in draw.items():
        want = value.copy()
        if name == "bias_ih":
            want[H:2 * H] += 1.0
        assert_array_equal(cell.params[name], want)
    for cls, G in ((fastrnn.LSTMCell, 4), (fastrnn.GRUCell, 3), (fastrnn.RNNCell, 1)):
        cell = cls(D, H, dtype=np.float64, backend=backend, seed=15, recurrent_init="orthogonal")
        w_hh = cell.params["weight_hh"]
        for k in range(G):
            q = w_hh[k * H:(k + 1) * H]
            assert_allclose(q.T @ q, np.eye(H), atol=1e-12)


@pytest.mark.parametrize("make", [
    lambda **kw: fastrnn.LSTM(D, H, **kw),
    lambda **kw: fastrnn.LSTMCell(D, H, **kw),
])
def test_bad_init_options(make):
    with pytest.raises(ValueError, match="recurrent_init"):
        make(recurrent_init="xavier")
    with pytest.raises(TypeError, match="forget_bias"):
        make(forget_bias="1")
    with pytest.raises(ValueError, match="forget_bias"):
        make(forget_bias=float("nan"))
    with pytest.raises(ValueError, match="no forget gate"):
        make(forget_gate=False, forget_bias=1.0)
    with pytest.raises(ValueError, match="bias=True"):
        make(bias=False, forget_bias=1.0)
    make(forget_gate=False, forget_bias=0.0)  # zero is the default: fine without forget gate


def test_forget_bias_only_on_the_lstm():
    for cls in (fastrnn.GRU, fastrnn.RNN, fastrnn.GRUCell, fastrnn.RNNCell):
        with pytest.raises(TypeError):
            cls(D, H, forget_bias=1.0)
