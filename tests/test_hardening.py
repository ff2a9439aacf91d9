"""Hardening of the layers' Python side (issue 11): inputs kept for backward are copies, sizes are
fixed after construction, flags are bools, copy/pickle, load_state_dict and hand-changed arrays
give clear errors, and one layer used from several threads is safe."""
import copy
import pickle
import threading

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import fastrnn
from cases import CASES, make_layer

BACKENDS = fastrnn.available_backends()
DTYPES = [np.float32, np.float64]


def tolerance(dtype):
    return {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-13}


def make(case, backend, dtype, input_size=3, hidden_size=4, **options):
    return make_layer(case, input_size, hidden_size, backend=backend, dtype=dtype, seed=0, **options)


def inputs(layer, steps=6, batch=3, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((steps, batch, layer.input_size)).astype(layer.dtype)
    dy = rng.standard_normal((steps, batch, layer.hidden_size * layer.num_directions)).astype(layer.dtype)
    return x, dy


def flat(state):
    return np.concatenate([s.ravel() for s in (state if isinstance(state, tuple) else (state,))])


# -- lengths are copied for backward (item 4) ------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", ["lstm", "gru_reset_after", "rnn_tanh"])
def test_changing_lengths_between_forward_and_backward_does_not_change_dx(cell, backend, dtype):
    layer = make(cell, backend, dtype, bidirectional=True)
    x, dy = inputs(layer)
    lengths = np.array([6, 2, 4], dtype=np.int64)  # int64 and C-contiguous: usable as it is
    layer(x, lengths=lengths)
    dx_expected, dstate_expected = layer.backward(dy)
    layer.zero_grad()
    layer(x, lengths=lengths)
    lengths[...] = [1, 6, 6]
    dx, dstate = layer.backward(dy)
    assert_array_equal(dx, dx_expected)
    assert_array_equal(flat(dstate), flat(dstate_expected))


# -- sizes and options are fixed after construction (items 3 and 10) --------------------------

FIXED = ["input_size", "hidden_size", "num_layers", "bias", "batch_first", "bidirectional", "peephole",
         "dtype", "backend", "num_directions", "params", "grads"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", FIXED)
def test_fixed_attributes_cannot_be_set_or_deleted(name, backend):
    layer = make("lstm", backend, np.float32)
    before = getattr(layer, name)
    new = {"dtype": np.dtype(np.float64), "backend": "reference", "params": {}, "grads": {}}.get(name, 512)
    with pytest.raises(AttributeError, match=rf"LSTM\.{name} cannot be changed after construction"):
        setattr(layer, name, new)
    with pytest.raises(AttributeError, match=rf"LSTM\.{name} cannot be changed"):
        delattr(layer, name)
    assert getattr(layer, name) is before
    x, dy = inputs(layer)
    y, _ = layer(x)  # still usable, with its own sizes
    assert y.shape == (6, 3, 4) and y.dtype == np.float32


@pytest.mark.parametrize("cell,name,value", [
    ("gru_reset_after", "reset_after", True), ("gru_reset_before", "reset_after", False),
    ("rnn_tanh", "nonlinearity", "tanh"), ("rnn_relu", "nonlinearity", "relu"),
])
def test_cell_options_are_readable_and_fixed(cell, name, value):
    layer = make(cell, "reference", np.float64)
    assert getattr(layer, name) == value
    with pytest.raises(AttributeError, match=f"{name} cannot be changed after construction"):
        setattr(layer, name, "relu" if name == "nonlinearity" else not value)
    assert getattr(layer, name) == value


def test_hidden_size_changed_on_the_issue_example_raises_and_the_layer_still_works():
    layer = fastrnn.LSTM(4, 8)
    with pytest.raises(AttributeError, match="hidden_size"):
        layer.hidden_size = 512
    y, (h, c) = layer(np.ones((3, 2, 4), np.float32))
    assert y.shape == (3, 2, 8) and layer.hidden_size == 8


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_and_training_stay_writable_and_dropout_is_checked(backend):
    layer = make("gru_reset_after", backend, np.float64, num_layers=2, dropout=0.5)
    layer.dropout = 0.0
    x, dy = inputs(layer)
    y_no_dropout, _ = layer(x)
    assert_array_equal(y_no_dropout, layer.eval()(x)[0])
    for bad, error in [(1.5, ValueError), (-0.1, ValueError), ("0.5", TypeError), (True, TypeError)]:
        with pytest.raises(error, match="dropout"):
            layer.dropout = bad
        assert layer.dropout == 0.0


# -- flags are bools (item 9, 10) ------------------------------------------------------------

@pytest.mark.parametrize("flag", ["bias", "batch_first", "bidirectional", "peephole", "reset_after"])
@pytest.mark.parametrize("value", ["no", 0, 1, 2, 1.0, None, np.array([1, 0]), np.array(True)])
def test_flags_must_be_bools(flag, value):
    cls = fastrnn.GRU if flag == "reset_after" else fastrnn.LSTM
    with pytest.raises(TypeError, match=rf"{flag} must be True or False, got {type(value).__name__}"):
        cls(3, 4, backend="reference", **{flag: value})


@pytest.mark.parametrize("flag", ["bias", "batch_first", "bidirectional", "peephole"])
def test_numpy_bools_are_accepted_as_flags(flag):
    layer = fastrnn.LSTM(3, 4, backend="reference", **{flag: np.bool_(True)})
    assert getattr(layer, flag) is True


@pytest.mark.parametrize("value,error", [(np.array(["relu"]), TypeError), (None, TypeError), ("ReLU", ValueError)])
def test_nonlinearity_must_be_one_of_the_names(value, error):
    with pytest.raises(error, match="nonlinearity must be 'tanh' or 'relu'"):
        fastrnn.RNN(3, 4, nonlinearity=value, backend="reference")


# -- copy.deepcopy and pickle (item 9) ---------------------------------------------------------

def forward_backward(layer, x, dy, lengths=None):
    layer.zero_grad()
    y, state = layer(x, lengths=lengths)
    dx, dstate = layer.backward(dy)
    return [y, flat(state), dx, flat(dstate)] + [layer.grads[k].copy() for k in sorted(layer.grads)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", sorted(CASES))
def test_deepcopy_has_and_uses_its_own_arrays(cell, backend, dtype):
    layer = make(cell, backend, dtype, num_layers=2, bidirectional=True)
    x, dy = inputs(layer)
    expected = forward_backward(layer, x, dy, lengths=[6, 2, 5])
    clone = copy.deepcopy(layer)
    for name in layer.params:
        assert clone.params[name] is not layer.params[name]
        assert clone.grads[name] is not layer.grads[name]
        assert_array_equal(clone.params[name], layer.params[name])
    # The original changes; the copy computes what the original computed before.
    for name in layer.params:
        layer.params[name][...] = 0.5
    for got, want in zip(forward_backward(clone, x, dy, lengths=[6, 2, 5]), expected):
        assert_array_equal(got, want)
    # The copy's parameters are the ones its kernels read: a layer loaded with the same changed
    # weights gives the copy's new results.
    clone.params["weight_hh_l0"][...] *= -1
    twin = make(cell, backend, dtype, num_layers=2, bidirectional=True)
    twin.load_state_dict(clone.state_dict())
    for got, want in zip(forward_backward(clone, x, dy), forward_backward(twin, x, dy)):
        assert_array_equal(got, want)
    assert clone.hidden_size == layer.hidden_size and clone.backend == layer.backend
    with pytest.raises(AttributeError, match="cannot be changed"):
        clone.hidden_size = 5


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", sorted(CASES))
def test_pickle_round_trip_gives_an_equal_layer(cell, backend, dtype):
    layer = make(cell, backend, dtype, num_layers=2, bidirectional=True, dropout=0.3)
    x, dy = inputs(layer)
    restored = pickle.loads(pickle.dumps(layer))
    assert repr(restored) == repr(layer)
    for name in layer.params:
        assert_array_equal(restored.params[name], layer.params[name])
    # Same weights, same options, same dropout random stream: the same numbers.
    for got, want in zip(forward_backward(restored, x, dy), forward_backward(layer, x, dy)):
        assert_allclose(got, want, **tolerance(dtype))
    assert restored._unit_params[0]["w_ih"] is restored.params["weight_ih_l0"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("clone", [copy.deepcopy, lambda layer: pickle.loads(pickle.dumps(layer))])
def test_a_pending_forward_is_not_copied(clone, backend):
    layer = make("lstm", backend, np.float64)
    x, dy = inputs(layer)
    layer(x)
    copied = clone(layer)
    with pytest.raises(RuntimeError, match="needs a preceding forward"):
        copied.backward(dy)
    dx, _ = layer.backward(dy)  # the original's forward is still pending
    assert dx.shape == x.shape


def test_linear_and_embedding_copy_and_pickle_too():
    linear = fastrnn.Linear(3, 2, seed=0)
    for clone in (copy.deepcopy(linear), pickle.loads(pickle.dumps(linear))):
        assert_array_equal(clone(np.ones((4, 3), np.float32)), linear(np.ones((4, 3), np.float32)))
        assert clone.params["weight"] is not linear.params["weight"]


# -- load_state_dict (item 9) ------------------------------------------------------------------

@pytest.mark.parametrize("value", [None, [("weight_ih_l0", np.zeros((16, 3)))], np.zeros(3), "weights"])
def test_load_state_dict_refuses_non_dicts(value):
    layer = make("lstm", "reference", np.float32)
    before = layer.state_dict()
    with pytest.raises(TypeError, match=f"state_dict must be a dict of arrays by name, got {type(value).__name__}"):
        layer.load_state_dict(value)
    for name, array in before.items():
        assert_array_equal(layer.params[name], array)


@pytest.mark.parametrize("value,error,pattern", [
    (np.zeros((16, 3), np.int64), TypeError, "must be a floating-point array, got dtype int64"),
    (np.zeros((16, 3), np.complex128), TypeError, "must be a floating-point array, got dtype complex128"),
    (np.zeros((3, 16)), ValueError, r"must have shape \(16, 3\), got \(3, 16\)"),
    ("abc", TypeError, "must be a floating-point array"),
])
def test_load_state_dict_names_the_bad_entry_and_changes_nothing(value, error, pattern):
    layer = make("lstm", "reference", np.float32)
    before = layer.state_dict()
    state = {name: np.ones_like(array) for name, array in before.items()}
    state["weight_ih_l0"] = value
    with pytest.raises(error, match=r"state_dict\['weight_ih_l0'\] " + pattern):
        layer.load_state_dict(state)
    for name, array in before.items():
        assert_array_equal(layer.params[name], array)


# -- arrays changed by hand in place (items 3, 9) ----------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_read_only_grads_give_a_clear_error_before_anything_changes(backend, dtype):
    layer = make("gru_reset_after", backend, dtype, num_layers=2)
    x, dy = inputs(layer)
    layer(x)
    layer.grads["weight_ih_l0"].setflags(write=False)
    with pytest.raises(ValueError, match=r"grads\['weight_ih_l0'\] is read-only, but backward adds into it"):
        layer.backward(dy)
    # Validated before any kernel ran: no gradient changed (layer 1 runs first in backward), and
    # the forward is still pending.
    for name, grad in layer.grads.items():
        assert not grad.any(), name
    layer.grads["weight_ih_l0"].setflags(write=True)
    dx, _ = layer.backward(dy)
    assert dx.shape == x.shape and layer.grads["weight_ih_l0"].any()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["params", "grads"])
@pytest.mark.parametrize("change", ["reshape", "dtype"])
def test_arrays_reshaped_or_reviewed_in_place_are_refused(change, kind, backend):
    layer = make("lstm", backend, np.float32, input_size=4, hidden_size=8)
    x, dy = inputs(layer)
    array = getattr(layer, kind)["weight_hh_l0"]  # (32, 8) float32
    if change == "reshape":
        array.shape = (8, 32)
        expected = r"got a C-contiguous float32 array of shape \(8, 32\)"
    else:
        array.dtype = np.float64
        expected = r"got a C-contiguous float64 array of shape \(32, 4\)"
    with pytest.raises(ValueError, match=rf"{kind}\['weight_hh_l0'\] must stay a C-contiguous float32 array of shape \(32, 8\).*{expected}"):
        layer(x)


# -- threads (item 12) ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_one_layer_trained_from_several_threads_gives_each_its_own_results(backend, dtype):
    threads, rounds = 4, 6
    layer = make("lstm", backend, dtype, input_size=5, hidden_size=16, num_layers=2, bidirectional=True)
    data = [inputs(layer, steps=12, batch=4, seed=seed) for seed in range(threads)]
    expected = []
    for x, dy in data:
        layer(x)
        expected.append(layer.backward(dy)[0])
    grads_once = {name: grad.copy() for name, grad in layer.grads.items()}
    layer.zero_grad()

    barrier = threading.Barrier(threads)
    results, errors = [[] for _ in range(threads)], []

    def train(index):
        x, dy = data[index]
        try:
            for _ in range(rounds):
                barrier.wait()  # every thread starts its forward at the same moment
                layer(x)
                barrier.wait()  # ... and its backward after all the forwards
                results[index].append(layer.backward(dy)[0])
        except Exception as error:  # reported below; the assertion names it
            errors.append(error)
            barrier.abort()

    workers = [threading.Thread(target=train, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    for index in range(threads):
        assert len(results[index]) == rounds
        for dx in results[index]:
            assert_allclose(dx, expected[index], **tolerance(dtype))
    # The threads' gradients add up in the order the threads ran: equal up to rounding, which
    # in float32 is relative to the largest gradient (the sums cancel).
    rtol = tolerance(dtype)["rtol"]
    for name, grad in layer.grads.items():
        want = rounds * grads_once[name]
        assert_allclose(grad, want, rtol=rtol, atol=4 * rtol * np.abs(want).max(), err_msg=name)


def test_backward_pairs_with_the_forward_of_its_own_thread():
    layer = make("gru_reset_after", "reference", np.float64)
    x, dy = inputs(layer)
    layer(x)  # pending in the main thread
    raised = []

    def backward_elsewhere():
        with pytest.raises(RuntimeError, match="needs a preceding forward call \\(in the same thread\\)"):
            layer.backward(dy)
        raised.append(True)

    worker = threading.Thread(target=backward_elsewhere)
    worker.start()
    worker.join()
    assert raised == [True]
    assert layer.backward(dy)[0].shape == x.shape
