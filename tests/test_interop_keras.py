"""Keras 3 weights in and out of fastrnn layers, checked against Keras itself (torch backend)."""
import os

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import fastrnn
from fastrnn.interop import load_keras_weights, to_keras_weights

os.environ.setdefault("KERAS_BACKEND", "torch")
pytest.importorskip("torch")
keras = pytest.importorskip("keras")
# Keras's torch backend calls np.array(tensor) in a way NumPy 2 warns about; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

TOLERANCES = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}
D, H, B, T = 5, 4, 3, 7

# id -> (fastrnn layer factory, Keras layer factory), the same cell on both sides.
CELLS = {
    "lstm": (lambda **kw: fastrnn.LSTM(D, H, **kw), lambda **kw: keras.layers.LSTM(H, **kw)),
    "gru_reset_after": (lambda **kw: fastrnn.GRU(D, H, **kw), lambda **kw: keras.layers.GRU(H, **kw)),
    "gru_reset_before": (
        lambda **kw: fastrnn.GRU(D, H, reset_after=False, **kw),
        lambda **kw: keras.layers.GRU(H, reset_after=False, **kw),
    ),
    "rnn_tanh": (lambda **kw: fastrnn.RNN(D, H, **kw), lambda **kw: keras.layers.SimpleRNN(H, **kw)),
    "rnn_relu": (
        lambda **kw: fastrnn.RNN(D, H, nonlinearity="relu", **kw),
        lambda **kw: keras.layers.SimpleRNN(H, activation="relu", **kw),
    ),
}


def numpy_of(value):
    return keras.ops.convert_to_numpy(value)


def keras_layer(cell, dtype, bias=True):
    layer = CELLS[cell][1](return_sequences=True, return_state=True, use_bias=bias, dtype=np.dtype(dtype).name)
    layer.build((None, None, D))
    return layer


def fastrnn_layer(cell, dtype, bias=True, seed=0):
    return CELLS[cell][0](batch_first=True, bias=bias, dtype=dtype, seed=seed)


def tolerance(cell, dtype):
    """The tolerance against Keras: in float64, Keras's GRU(reset_after=False) and SimpleRNN agree
    with their own equations only to ~1e-7 (checked in NumPy on the side; fastrnn agrees with them
    to 1e-16), so they get float32's; LSTM and GRU(reset_after=True) agree to 1e-12."""
    return TOLERANCES[np.float32 if cell in ("gru_reset_before", "rnn_tanh", "rnn_relu") else dtype]


def run_both(ours, theirs, dtype, seed=1):
    """Both layers' (y, h_n) on one random batch-major input and initial state."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, D)).astype(dtype)
    h0 = rng.standard_normal((B, H)).astype(dtype)
    if isinstance(ours, fastrnn.LSTM):
        c0 = rng.standard_normal((B, H)).astype(dtype)
        y, (h_n, c_n) = ours(x, (h0[None], c0[None]))
        y_k, h_k, c_k = map(numpy_of, theirs(x, initial_state=[h0, c0]))
        assert_allclose(c_k, c_n[0], **TOLERANCES[dtype])  # LSTM: never the looser GRU case
    else:
        y, h_n = ours(x, h0[None])
        y_k, h_k = map(numpy_of, theirs(x, initial_state=[h0]))
    return (y, h_n[0]), (y_k, h_k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_fastrnn_weights_run_in_keras(cell, bias, dtype):
    ours, theirs = fastrnn_layer(cell, dtype, bias), keras_layer(cell, dtype, bias)
    if bias:  # non-zero biases in both, so a bias in the wrong gate or sum would show
        rng = np.random.default_rng(2)
        for value in ours.params.values():
            if value.ndim == 1:
                value[...] = rng.uniform(-1, 1, value.shape)
    theirs.set_weights(to_keras_weights(ours))
    (y, h_n), (y_k, h_k) = run_both(ours, theirs, dtype)
    assert_allclose(y_k, y, **tolerance(cell, dtype))
    assert_allclose(h_k, h_n, **tolerance(cell, dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_keras_weights_run_in_fastrnn(cell, dtype):
    theirs = keras_layer(cell, dtype)
    rng = np.random.default_rng(3)
    theirs.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype(dtype) for w in theirs.get_weights()])
    ours = fastrnn_layer(cell, dtype, seed=9)
    load_keras_weights(ours, theirs.get_weights())
    (y, h_n), (y_k, h_k) = run_both(ours, theirs, dtype)
    assert_allclose(y, y_k, **tolerance(cell, dtype))
    assert_allclose(h_n, h_k, **tolerance(cell, dtype))
    # Exactly back: a single Keras bias loads as bias_ih with bias_hh = 0, and bias_ih + 0 is itself.
    for back, original in zip(to_keras_weights(ours), theirs.get_weights()):
        assert_array_equal(back, original)


def test_keras_gru_gate_order_matters():
    """The z/r swap is real: the same arrays without reordering give a different GRU."""
    ours = fastrnn_layer("gru_reset_after", np.float64)
    theirs = keras_layer("gru_reset_after", np.float64)
    theirs.set_weights(to_keras_weights(ours))
    naive = fastrnn_layer("gru_reset_after", np.float64, seed=5)
    naive.load_state_dict({
        "weight_ih_l0": theirs.get_weights()[0].T, "weight_hh_l0": theirs.get_weights()[1].T,
        "bias_ih_l0": theirs.get_weights()[2][0], "bias_hh_l0": theirs.get_weights()[2][1],
    })
    (y, _), (y_k, _) = run_both(naive, theirs, np.float64)
    assert np.abs(y - y_k).max() > 1e-3


@pytest.mark.parametrize("cell", ["lstm", "gru_reset_before", "rnn_tanh"])
def test_stacked_bidirectional_matches_keras_stack(cell):
    dtype = np.float64
    ours = CELLS[cell][0](num_layers=2, bidirectional=True, batch_first=True, dtype=dtype, seed=4)
    stack = [
        keras.layers.Bidirectional(CELLS[cell][1](return_sequences=True, dtype="float64"), dtype="float64")
        for _ in range(2)
    ]
    model = keras.Sequential([keras.Input((None, D), dtype="float64"), *stack])
    model.set_weights(to_keras_weights(ours))
    x = np.random.default_rng(6).standard_normal((B, T, D))
    assert_allclose(numpy_of(model(x)), ours(x)[0], **tolerance(cell, dtype))
    back = CELLS[cell][0](num_layers=2, bidirectional=True, batch_first=True, dtype=dtype, seed=8)
    load_keras_weights(back, model.get_weights())
    for name, value in ours.params.items():
        if name.startswith("weight"):
            assert_array_equal(back.params[name], value)
        elif name.startswith("bias_ih"):  # Keras's one bias is the sum; it comes back as bias_ih
            hh = name.replace("bias_ih", "bias_hh")
            assert_array_equal(back.params[name] + back.params[hh], value + ours.params[hh])
    assert_allclose(back(x)[0], ours(x)[0], **TOLERANCES[dtype])


def test_bad_keras_weights_are_refused():
    layer = fastrnn.LSTM(D, H, seed=0)
    weights = to_keras_weights(layer)
    before = layer.state_dict()
    with pytest.raises(ValueError, match="must hold 3 arrays"):
        load_keras_weights(layer, weights[:2])
    with pytest.raises(ValueError, match=r"weights\[1\] must have shape \(4, 16\), got \(16, 4\)"):
        load_keras_weights(layer, [weights[0], weights[1].T, weights[2]])
    for name, value in layer.state_dict().items():
        assert_array_equal(value, before[name])
    with pytest.raises(ValueError, match="peephole"):
        to_keras_weights(fastrnn.LSTM(D, H, peephole=True))
    with pytest.raises(TypeError, match="Linear"):
        to_keras_weights(fastrnn.Linear(D, H))
