"""ONNX export of fastrnn layers run in onnxruntime against fastrnn's forward, and import back."""
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import fastrnn
from fastrnn.interop import from_onnx, to_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

D, H, B, T = 3, 5, 4, 7
FLOAT32 = dict(rtol=1e-5, atol=1e-5)

LAYERS = {
    "lstm": lambda **kw: fastrnn.LSTM(D, H, **kw),
    "lstm_peephole": lambda **kw: fastrnn.LSTM(D, H, peephole=True, **kw),
    "gru_reset_after": lambda **kw: fastrnn.GRU(D, H, **kw),
    "gru_reset_before": lambda **kw: fastrnn.GRU(D, H, reset_after=False, **kw),
    "rnn_tanh": lambda **kw: fastrnn.RNN(D, H, **kw),
    "rnn_relu": lambda **kw: fastrnn.RNN(D, H, nonlinearity="relu", **kw),
}
SHAPES = {"single": dict(num_layers=1, bidirectional=False), "stacked_bidirectional": dict(num_layers=2, bidirectional=True),
          "stacked": dict(num_layers=3, bidirectional=False)}


def random_layer(kind, dtype=np.float32, seed=0, **options):
    """A layer with every parameter, biases and peepholes included, drawn from U(-1, 1)."""
    layer = LAYERS[kind](dtype=dtype, seed=seed, **options)
    rng = np.random.default_rng(seed + 100)
    for value in layer.params.values():
        value[...] = rng.uniform(-1, 1, value.shape)
    return layer


def run_onnx(model, **feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_onnxruntime_matches_forward_with_lengths_and_state(kind, shape):
    layer = random_layer(kind, **SHAPES[shape])
    rng = np.random.default_rng(1)
    units = layer.num_layers * layer.num_directions
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    lengths = np.array([T, 2, 5, 1], np.int32)
    state = [rng.standard_normal((units, B, H)).astype(np.float32) for _ in layer.state_names]
    feeds = dict(x=x, lengths=lengths, **{f"{name}0": s for name, s in zip(layer.state_names, state)})
    got = run_onnx(to_onnx(layer, lengths=True, initial_state=True), **feeds)
    y, state_n = layer.eval()(x, state if len(state) > 1 else state[0], lengths=lengths)
    expected = [y, *(state_n if isinstance(state_n, tuple) else (state_n,))]
    assert len(got) == len(expected)
    for ours, theirs in zip(expected, got):
        assert_allclose(theirs, ours, **FLOAT32)
    # Past each sequence's length both give zeros; lengths are honoured, not ignored.
    assert np.all(got[0][2:, 1] == 0) and np.any(got[0][2:, 0] != 0)


@pytest.mark.parametrize("kind", ["lstm", "gru_reset_before", "rnn_relu"])
def test_onnxruntime_matches_forward_batch_first_without_bias(kind):
    layer = random_layer(kind, batch_first=True, bias=False, num_layers=2, bidirectional=True)
    x = np.random.default_rng(2).standard_normal((B, T, D)).astype(np.float32)
    y, state_n = layer(x)
    got = run_onnx(to_onnx(layer), x=x)
    assert_allclose(got[0], y, **FLOAT32)
    assert_allclose(got[1], state_n[0] if isinstance(state_n, tuple) else state_n, **FLOAT32)


def test_onnx_node_layout_is_onnx_gate_order():
    """The exported W is ONNX's i, o, f, c and P is i, o, f, read off the node itself."""
    layer = random_layer("lstm_peephole")
    model = to_onnx(layer)
    arrays = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    (node,) = [n for n in model.graph.node if n.op_type == "LSTM"]
    w, p = arrays[node.input[1]][0], arrays[node.input[7]][0]
    w_ih, peep = layer.params["weight_ih_l0"], layer.params["weight_peephole_l0"]
    for onnx_gate, torch_gate in enumerate((0, 3, 1, 2)):  # i, o, f, c <- i, f, g, o
        assert_array_equal(w[onnx_gate * H:(onnx_gate + 1) * H], w_ih[torch_gate * H:(torch_gate + 1) * H])
    assert_array_equal(p, np.concatenate([peep[0], peep[2], peep[1]]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_from_onnx_round_trip(kind, shape, dtype, tmp_path):
    layer = random_layer(kind, dtype=dtype, **SHAPES[shape])
    path = tmp_path / "layer.onnx"
    to_onnx(layer, path, lengths=True, initial_state=True)
    back = from_onnx(path, backend="reference")
    assert repr(back).replace("'reference'", "'x'") == repr(layer).replace(f"'{layer.backend}'", "'x'")
    assert back.params.keys() == layer.params.keys()
    for name, value in layer.params.items():
        assert back.params[name].dtype == value.dtype
        assert_array_equal(back.params[name], value)


def test_from_onnx_refuses_what_fastrnn_does_not_compute():
    model = to_onnx(random_layer("lstm"))
    (node,) = [n for n in model.graph.node if n.op_type == "LSTM"]
    node.attribute.append(onnx.helper.make_attribute("clip", 1.0))
    with pytest.raises(ValueError, match="'clip' is not supported"):
        from_onnx(model)
    model = to_onnx(random_layer("rnn_tanh"))
    (node,) = [n for n in model.graph.node if n.op_type == "RNN"]
    node.attribute[[a.name for a in node.attribute].index("direction")].s = b"reverse"
    with pytest.raises(ValueError, match="direction 'reverse' is not supported"):
        from_onnx(model)
    empty = onnx.helper.make_model(onnx.helper.make_graph([], "empty", [], []))
    with pytest.raises(ValueError, match="no ONNX LSTM, GRU or RNN node"):
        from_onnx(empty)
    with pytest.raises(TypeError, match="Linear"):
        to_onnx(fastrnn.Linear(2, 3))
