"""Property-based parity: for any shape and option, the cython layer equals the reference layer."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from cases import CASES, make_layer


@st.composite
def configurations(draw):
    case = draw(st.sampled_from(sorted(CASES)))
    steps, batch = draw(st.integers(1, 6)), draw(st.integers(1, 5))
    lengths = draw(st.one_of(st.none(), st.lists(st.integers(1, steps), min_size=batch, max_size=batch)))
    layer_options = dict(
        num_layers=draw(st.integers(1, 2)), bidirectional=draw(st.booleans()), bias=draw(st.booleans()),
        batch_first=draw(st.booleans()),
    )
    sizes = (steps, batch, draw(st.integers(1, 5)), draw(st.integers(1, 6)))
    return case, layer_options, sizes, lengths, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=60, deadline=None)
@given(configurations())
def test_cython_layer_equals_reference_layer(configuration):
    case, options, (steps, batch, inputs, hidden), lengths, seed = configuration
    rng = np.random.default_rng(seed)
    layers = [make_layer(case, inputs, hidden, dtype=np.float64, backend=backend, seed=seed, **options)
              for backend in ("cython", "reference")]
    dirs = layers[0].num_directions
    x_shape = (batch, steps, inputs) if options["batch_first"] else (steps, batch, inputs)
    x = rng.standard_normal(x_shape)
    dy = rng.standard_normal(x_shape[:2] + (dirs * hidden,))
    state_shape = (options["num_layers"] * dirs, batch, hidden)
    state = tuple(rng.standard_normal(state_shape) for _ in layers[0].state_names)
    dstate = tuple(rng.standard_normal(state_shape) for _ in layers[0].state_names)
    if len(state) == 1:
        state, dstate = state[0], dstate[0]

    results = []
    for layer in layers:
        y, state_n = layer(x, state, lengths)
        dx, dstate0 = layer.backward(dy, dstate)
        results.append((y, state_n, dx, dstate0, layer.grads))
    (y, state_n, dx, dstate0, grads), (y_ref, state_n_ref, dx_ref, dstate0_ref, grads_ref) = results

    tol = {"rtol": 1e-12, "atol": 1e-13}
    assert_allclose(y, y_ref, **tol)
    assert_allclose(dx, dx_ref, **tol)
    assert_allclose(np.asarray(state_n), np.asarray(state_n_ref), **tol)
    assert_allclose(np.asarray(dstate0), np.asarray(dstate0_ref), **tol)
    for name in grads_ref:
        assert_allclose(grads[name], grads_ref[name], err_msg=name, **tol)
