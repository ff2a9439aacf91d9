"""Fuzzing both backends with random shapes, options, layouts and bad values (issue 11).

Every example runs on the cython and the reference backend and requires: the same numbers to
tolerance for valid input (NaN and inf included: NaN at the same places), or the same clear
exception (type and message, naming the argument) for bad input; the inputs never modified; the
layer still usable after an error. The kernel bugs issue 11 found (ReLU NaN, NaN in the padding)
have their own tests at the end.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

import fastrnn

pytestmark = [
    pytest.mark.skipif("cython" not in fastrnn.available_backends(), reason="needs the compiled backend to compare"),
    # inf and NaN are fed on purpose: NumPy's warnings about them (in the reference) are expected.
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]
BACKENDS = ("cython", "reference")
CELLS = [
    (fastrnn.LSTM, {}), (fastrnn.LSTM, {"peephole": True}),
    (fastrnn.GRU, {}), (fastrnn.GRU, {"reset_after": False}),
    (fastrnn.RNN, {}), (fastrnn.RNN, {"nonlinearity": "relu"}),
]
SCALES = (1e-30, 1e-3, 1.0, 1e3, 1e30)  # magnitudes of x, state and dy: tiny to saturating
LAYOUTS = ("contiguous", "strided", "read-only", "other-float", "nested-list")
FUZZ = settings(max_examples=120, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw, cells=CELLS):
    """A layer configuration and the arrays of one forward/backward, as a dict."""
    cls, cell_options = draw(st.sampled_from(cells))
    steps, batch = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    lengths = draw(st.one_of(
        st.none(),
        st.lists(st.integers(1, steps), min_size=batch, max_size=batch),
        st.lists(st.integers(1, steps), min_size=batch, max_size=batch).map(np.array),
        st.lists(st.integers(1, steps), min_size=batch, max_size=batch).map(lambda v: np.array(v, np.int32)),
    ))
    return dict(
        cls=cls,
        options=dict(
            num_layers=draw(st.integers(1, 2)), bidirectional=draw(st.booleans()),
            bias=draw(st.booleans()), batch_first=draw(st.booleans()),
            dtype=draw(st.sampled_from([np.float32, np.float64])), **cell_options,
        ),
        sizes=(steps, batch, draw(st.integers(1, 4)), draw(st.integers(1, 5))),
        lengths=lengths,
        scale=draw(st.sampled_from(SCALES)),
        layout=draw(st.sampled_from(LAYOUTS)),
        with_state=draw(st.booleans()),
        with_dstate=draw(st.booleans()),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def build(problem, backend):
    return problem["cls"](problem["sizes"][2], problem["sizes"][3], backend=backend,
                          seed=problem["seed"], **problem["options"])


def in_layout(array, layout, dtype):
    """`array` (of the layer's dtype) as the caller hands it in: same values, another form.

    Only x and dy come as nested lists: a list state means a list of states (h, c).
    """
    array = array.astype(dtype)
    if layout == "strided":
        wide = np.zeros(array.shape[:-1] + (2 * array.shape[-1],), dtype)
        wide[..., ::2] = array
        return wide[..., ::2]
    if layout == "read-only":
        array.setflags(write=False)
    if layout == "other-float":
        return array.astype(np.float64 if dtype == np.float32 else np.float32)
    if layout == "nested-list":
        return array.tolist()
    return array


def arrays(problem, layer):
    """x, state, dy, dstate for `problem` (state/dstate None unless drawn), in its layout."""
    steps, batch, inputs, hidden = problem["sizes"]
    rng = np.random.default_rng(problem["seed"])
    dtype, layout, scale = layer.dtype, problem["layout"], problem["scale"]
    outer = (batch, steps) if layer.batch_first else (steps, batch)
    x = in_layout(scale * rng.standard_normal(outer + (inputs,)), layout, dtype)
    # Gradients at most 1: huge dy times huge x would overflow float32 in the weight gradients,
    # where the backends may round differently (one gives inf, the other inf - inf = NaN).
    grad_scale = min(scale, 1.0)
    dy = in_layout(grad_scale * rng.standard_normal(outer + (layer.num_directions * hidden,)), layout, dtype)
    state_shape = (layer.num_layers * layer.num_directions, batch, hidden)

    def state_like(magnitude):
        state_layout = "contiguous" if layout == "nested-list" else layout
        parts = tuple(in_layout(magnitude * rng.standard_normal(state_shape), state_layout, dtype)
                      for _ in layer.state_names)
        return parts if len(parts) > 1 else parts[0]

    state = state_like(scale) if problem["with_state"] else None
    dstate = state_like(grad_scale) if problem["with_dstate"] else None
    return x, state, dy, dstate


def snapshot(value):
    """A deep copy of an argument, to check later that it was not modified."""
    if isinstance(value, tuple):
        return tuple(snapshot(v) for v in value)
    return np.array(value, copy=True) if isinstance(value, np.ndarray) else value


def assert_unchanged(before, after):
    if isinstance(before, tuple):
        for b, a in zip(before, after):
            assert_unchanged(b, a)
    elif isinstance(before, np.ndarray):
        assert_array_equal(after, before)  # equal NaN positions count as equal
    else:
        assert after == before


def run(layer, x, state, dy, dstate, lengths):
    """Forward then backward; every output (gradients too) as a flat list of arrays."""
    y, state_n = layer(x, state, lengths)
    dx, dstate0 = layer.backward(dy, dstate)
    as_list = lambda s: list(s) if isinstance(s, tuple) else [s]  # noqa: E731
    return [y, *as_list(state_n), dx, *as_list(dstate0)] + [layer.grads[k] for k in sorted(layer.grads)]


def assert_same_numbers(ours, reference, dtype, scale=1.0):
    """Normwise closeness, NaN and inf at the same places: the tolerance is relative to each
    array's largest finite value, and at least to min(scale, 1), the size of dy.

    Inputs larger than 1 saturate gates, whose derivatives s(1 - s) and 1 - g^2 then come from
    a rounded s or g: the last-bit differences of the two backends' exp/tanh grow by up to
    1/(1 - s) there (a float32 s rounds to 1 or to 1 - 6e-8), so such inputs get a looser one.
    """
    rtol = {(True, True): 2e-5, (True, False): 1e-2, (False, True): 1e-10, (False, False): 1e-6}[
        (dtype == np.float32, scale <= 1.0)]
    for index, (got, want) in enumerate(zip(ours, reference)):
        finite = np.abs(want[np.isfinite(want)])
        atol = rtol * max(finite.max() if finite.size else 0.0, min(scale, 1.0))
        assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True, err_msg=f"output {index}")


def run_both(problem, prepare=None):
    """Run `problem` on both backends (after `prepare(layer)`); the outputs, inputs unchanged."""
    results = []
    for backend in BACKENDS:
        layer = build(problem, backend)
        if prepare is not None:
            prepare(layer)
        x, state, dy, dstate = arrays(problem, layer)
        lengths = problem["lengths"]
        before = snapshot((x, state, dy, dstate, lengths))
        results.append(run(layer, x, state, dy, dstate, lengths))
        assert_unchanged(before, (x, state, dy, dstate, lengths))
    return results


# -- valid input ---------------------------------------------------------------------------------

@FUZZ
@given(problems())
def test_valid_input_gives_the_same_numbers_on_both_backends(problem):
    ours, reference = run_both(problem)
    assert_same_numbers(ours, reference, problem["options"]["dtype"], problem["scale"])


def poison_strategy():
    return st.tuples(
        st.sampled_from(["x", "state", "weight", "dy", "dstate"]),
        st.sampled_from([np.nan, np.inf, -np.inf]),
        st.integers(0, 2**32 - 1),
    )


@FUZZ
@given(problems(), poison_strategy())
def test_nan_and_inf_propagate_alike_on_both_backends(problem, poison):
    where, value, position_seed = poison
    problem = dict(problem, layout="contiguous", with_state=True, with_dstate=True)
    rng = np.random.default_rng(position_seed)
    steps, batch = problem["sizes"][:2]
    b, t = int(rng.integers(batch)), int(rng.integers(steps))
    lengths = problem["lengths"]

    def put(array, index):
        array[index] = value

    layers = [build(problem, backend) for backend in BACKENDS]
    name = sorted(layers[0].params)[int(rng.integers(len(layers[0].params)))]
    index = int(rng.integers(layers[0].params[name].size))
    results = []
    for layer in layers:
        x, state, dy, dstate = arrays(problem, layer)
        first = lambda s: s[0] if isinstance(s, tuple) else s  # noqa: E731
        if where == "weight":
            put(layer.params[name].reshape(-1), index)
        elif where in ("x", "dy"):
            array = x if where == "x" else dy
            put(array, (b, t) if layer.batch_first else (t, b))
        else:
            put(first(state if where == "state" else dstate), (0, b))
        results.append(run(layer, x, state, dy, dstate, lengths))
    assert_same_numbers(*results, problem["options"]["dtype"], problem["scale"])


# -- bad input: the same clear exception from both backends --------------------------------------

def shape_of(problem, layer, dirs_hidden=False):
    steps, batch, inputs, hidden = problem["sizes"]
    last = layer.num_directions * hidden if dirs_hidden else inputs
    return (batch, steps, last) if layer.batch_first else (steps, batch, last)


def set_attribute(name, value):
    def change(layer):
        setattr(layer, name, value)
    return change


def read_only_grad(layer):
    layer.grads[sorted(layer.grads)[0]].setflags(write=False)


def reshaped_param(layer):
    """Give a parameter another shape in place: always a change, whatever the sizes (a (1, 1) weight
    gains a dimension)."""
    param = layer.params[sorted(layer.params)[0]]
    param.shape = param.shape[::-1] if param.ndim == 2 and param.shape[0] != param.shape[1] else (1,) + param.shape


# (name the message must contain, what to change: "x", "lengths", "state", "dy", "dstate" give a
# function of (problem, layer, good value) -> bad value; "layer" a function changing the layer)
BAD = {
    "x 1-d": ("x", "x", lambda p, l, x: x[0, 0]),  # 2-d x is valid: one unbatched sequence
    "x wrong size": ("x", "x", lambda p, l, x: np.zeros(x.shape[:2] + (x.shape[2] + 1,))),
    "x integers": ("x", "x", lambda p, l, x: np.ones(x.shape, np.int64)),
    "x complex": ("x", "x", lambda p, l, x: np.ones(x.shape, np.complex128)),
    "x strings": ("x", "x", lambda p, l, x: np.full(x.shape, "a")),
    "x None": ("x", "x", lambda p, l, x: None),
    "x ragged": ("x", "x", lambda p, l, x: [[[1.0] * x.shape[2]], [[1.0] * (x.shape[2] + 1)]]),
    "x no steps": ("x", "x", lambda p, l, x: x[:0] if not l.batch_first else x[:, :0]),
    "x no sequences": ("x", "x", lambda p, l, x: x[:, :0] if not l.batch_first else x[:0]),
    "lengths zero": ("lengths", "lengths", lambda p, l, v: np.zeros(p["sizes"][1], np.int64)),
    "lengths past T": ("lengths", "lengths", lambda p, l, v: np.full(p["sizes"][1], p["sizes"][0] + 1)),
    "lengths huge": ("lengths", "lengths", lambda p, l, v: np.full(p["sizes"][1], 2**62)),
    "lengths negative": ("lengths", "lengths", lambda p, l, v: np.full(p["sizes"][1], -1)),
    "lengths floats": ("lengths", "lengths", lambda p, l, v: np.ones(p["sizes"][1])),
    "lengths bools": ("lengths", "lengths", lambda p, l, v: np.ones(p["sizes"][1], bool)),
    "lengths wrong count": ("lengths", "lengths", lambda p, l, v: np.ones(p["sizes"][1] + 1, np.int64)),
    "lengths 2-d": ("lengths", "lengths", lambda p, l, v: np.ones((p["sizes"][1], 1), np.int64)),
    "state wrong shape": ("state", "state", lambda p, l, s: _state(l, p, extra=1)),
    "state wrong kind": ("state", "state", lambda p, l, s: _state(l, p, wrong_kind=True)),
    "state integers": ("state", "state", lambda p, l, s: _state(l, p, dtype=np.int32)),
    "dy wrong shape": ("dy", "dy", lambda p, l, d: np.zeros(shape_of(p, l, True)[:2] + (l.hidden_size * l.num_directions + 1,))),
    "dy integers": ("dy", "dy", lambda p, l, d: np.ones(shape_of(p, l, True), np.int64)),
    "dy None": ("dy", "dy", lambda p, l, d: None),
    "dstate wrong shape": ("dstate", "dstate", lambda p, l, s: _state(l, p, extra=1)),
    "hidden_size changed": ("hidden_size", "layer", set_attribute("hidden_size", 64)),
    "input_size changed": ("input_size", "layer", set_attribute("input_size", 64)),
    "dtype changed": ("dtype", "layer", set_attribute("dtype", np.dtype(np.float16))),
    "bidirectional changed": ("bidirectional", "layer", set_attribute("bidirectional", True)),
    "read-only grads": ("grads", "layer", read_only_grad),
    "reshaped params": ("params", "layer", reshaped_param),
}


def _state(layer, problem, extra=0, wrong_kind=False, dtype=None):
    shape = (layer.num_layers * layer.num_directions, problem["sizes"][1] + extra, layer.hidden_size)
    parts = tuple(np.zeros(shape, dtype or layer.dtype) for _ in layer.state_names)
    if wrong_kind:  # a tuple for a one-array state, one array for LSTM's (h, c)
        return parts if len(parts) == 1 else parts[0]
    return parts if len(parts) > 1 else parts[0]


def outcome(problem, case):
    """(exception type, message) of `case` on each backend, after checking inputs unchanged and
    that the layer still works afterwards (unless the case broke the layer on purpose)."""
    name, target, make_bad = BAD[case]
    seen = []
    for backend in BACKENDS:
        layer = build(problem, backend)
        x, state, dy, dstate = arrays(problem, layer)
        values = dict(x=x, state=state, dy=dy, dstate=dstate, lengths=problem["lengths"])
        error = None
        try:
            if target == "layer":
                make_bad(layer)
            else:
                values[target] = make_bad(problem, layer, values[target])
            before = snapshot(values)
            layer(values["x"], values["state"], values["lengths"])
            layer.backward(values["dy"], values["dstate"])
        except (TypeError, ValueError, AttributeError) as raised:
            error = raised
        assert error is not None, f"{case}: no error on {backend}"
        assert name in str(error), f"{case} on {backend}: {error}"
        if target != "layer":
            assert_unchanged(before, values)
            # The layer is unharmed: the good call works (and matches the other backend below).
            seen.append((type(error), str(error), run(build(problem, backend), *arrays(problem, layer),
                                                      problem["lengths"])))
        else:
            seen.append((type(error), str(error), None))
    return seen


@FUZZ
@given(problems(), st.sampled_from(sorted(BAD)))
def test_bad_input_gives_the_same_clear_error_on_both_backends(problem, case):
    problem = dict(problem, layout="contiguous", scale=1.0)
    (ours_type, ours_message, ours), (ref_type, ref_message, ref) = outcome(problem, case)
    assert ours_type is ref_type and ours_message == ref_message
    if ours is not None:
        assert_same_numbers(ours, ref, problem["options"]["dtype"])


# -- kernel bugs found by issue 11 (items 1 and 6) --------------------------------------------------

def relu_layers(dtype):
    return [fastrnn.RNN(3, 4, nonlinearity="relu", dtype=dtype, backend=backend, seed=0) for backend in BACKENDS]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_rnn_forward_propagates_nan_like_the_reference(dtype):
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(dtype)
    x[1, 0, 2] = np.nan
    ys = [layer(x)[0] for layer in relu_layers(dtype)]
    assert_array_equal(np.isnan(ys[0]), np.isnan(ys[1]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_rnn_backward_propagates_nan_like_the_reference(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 2, 3)).astype(dtype)
    dy = rng.standard_normal((4, 2, 4)).astype(dtype)
    layers = relu_layers(dtype)
    y, _ = layers[0](x)
    dy[y <= 0] = np.nan  # only where the unit is off, so the ReLU's derivative is 0 there
    assert np.isnan(dy).any()
    dxs = []
    for layer in layers:
        layer(x)
        dxs.append(layer.backward(dy)[0])
    assert_array_equal(np.isnan(dxs[0]), np.isnan(dxs[1]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls", [fastrnn.LSTM, fastrnn.GRU, fastrnn.RNN])
def test_padding_contents_do_not_matter(cls, backend, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 2, 3)).astype(dtype)
    dy = rng.standard_normal((5, 2, 8)).astype(dtype)
    lengths = [5, 2]
    results = []
    for padding in (0.0, np.nan):
        layer = cls(3, 4, bidirectional=True, dtype=dtype, backend=backend, seed=0)
        x_padded = x.copy()
        x_padded[2:, 1] = padding
        results.append(run(layer, x_padded, None, dy, None, lengths))
    for index, (got, want) in enumerate(zip(*results)):
        assert_array_equal(got, want, err_msg=f"output {index}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls", [fastrnn.LSTM, fastrnn.GRU, fastrnn.RNN])
def test_nan_in_a_valid_step_does_not_reach_the_padding_gradient(cls, backend, dtype):
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(dtype)
    x[0, 1, 0] = np.nan  # sequence 1 has 2 valid steps; its state is NaN from step 0 on
    layer = cls(3, 4, bidirectional=True, dtype=dtype, backend=backend, seed=0)
    y, _ = layer(x, lengths=[5, 2])
    dx, _ = layer.backward(np.ones_like(y))
    assert_array_equal(y[2:, 1], 0)
    assert_array_equal(dx[2:, 1], 0)  # padded steps have no gradient, whatever the state holds
    assert np.isfinite(dx[:, 0]).all()  # the other sequence is untouched
