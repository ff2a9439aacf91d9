"""The inference path (forward with keep=False, what the layers run under fastrnn.no_grad()) and
the packing of the per-step weights: the same outputs as the training forward, bit for bit, and
never weights older than the call's."""
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import fastrnn
from cases import CASES, kernels, make_layer, make_params, num_states, reference

# (T, B): one step of one row (generation); a pass short enough to run per step in BLAS; one long
# enough to pack W_hh for the step products (see _step_pack_min_steps in _kernels/products.pyx),
# with an odd T (the final state in the second of the two state slots) and an even one.
SHAPES = [(1, 1), (3, 2), (17, 9), (20, 8)]


def forward_both(module, case, x, state0, params, lengths, reverse):
    """(training forward, inference forward) of `module` on the same inputs."""
    options = CASES[case].options
    train = module.forward(x, state0, params, lengths, reverse, **options)
    infer = module.forward(x, state0, params, lengths, reverse, keep=False, **options)
    return train, infer


@pytest.mark.parametrize("backend", ["cython", "reference"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("case", CASES)
def test_inference_forward_equals_training_forward(case, shape, with_lengths, reverse, backend):
    cell = CASES[case].cell
    module = kernels(cell) if backend == "cython" else reference(cell)
    T, B = shape
    rng = np.random.default_rng(sum(shape) + 7 * reverse + 3 * with_lengths)
    D, H = 5, 6
    x = rng.standard_normal((T, B, D))
    state0 = tuple(rng.standard_normal((B, H)) for _ in range(num_states(cell)))
    params = make_params(case, rng, np.float64, D, H)
    lengths = rng.integers(1, T + 1, B).astype(np.int64) if with_lengths else None
    (y, state_n, cache), (y_inf, state_inf, cache_inf) = forward_both(
        module, case, x, state0, params, lengths, reverse)
    assert cache is not None and cache_inf is None
    assert_array_equal(y_inf, y)
    for final, final_inf in zip(state_n, state_inf):
        assert_array_equal(final_inf, final)


@pytest.mark.parametrize("case", CASES)
def test_layer_under_no_grad_equals_training_forward(case):
    rng = np.random.default_rng(11)
    layer = make_layer(case, 4, 5, num_layers=2, bidirectional=True, dtype=np.float32, seed=3)
    x = rng.standard_normal((18, 3, 4)).astype(np.float32)
    lengths = np.array([18, 5, 11])
    y, state = layer.forward(x, lengths=lengths)
    with fastrnn.no_grad():
        y_inf, state_inf = layer.forward(x, lengths=lengths)
    assert_array_equal(y_inf, y)
    as_tuple = lambda s: s if isinstance(s, tuple) else (s,)  # noqa: E731
    for final, final_inf in zip(as_tuple(state), as_tuple(state_inf)):
        assert_array_equal(final_inf, final)


def layers(case, **options):
    """The compiled layer of `case` and a reference layer with the same weights (float64)."""
    compiled = make_layer(case, 4, 6, dtype=np.float64, seed=5, **options)
    ref = make_layer(case, 4, 6, dtype=np.float64, seed=5, backend="reference", **options)
    return compiled, ref


def assert_same_forward(compiled, ref, x):
    y, _ = compiled.forward(x)
    y_ref, _ = ref.forward(x)
    assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(1, 1), (20, 8)])
@pytest.mark.parametrize("case", ["lstm", "gru_reset_after", "rnn_tanh"])
def test_weights_changed_in_place_by_hand_are_used_at_once(case, shape):
    compiled, ref = layers(case)
    x = np.random.default_rng(2).standard_normal((*shape, 4))
    for step in range(3):
        with fastrnn.no_grad():
            assert_same_forward(compiled, ref, x)
        for layer in (compiled, ref):
            w_hh = layer.params["weight_hh_l0"]
            w_hh *= -0.5  # in place: the array the kernels read, not a new one
            w_hh[0, 0] += step
            layer.params["weight_ih_l0"][...] += 0.25


@pytest.mark.parametrize("shape", [(1, 1), (20, 8)])
def test_weights_changed_by_an_optimizer_are_used_at_once(shape):
    compiled, ref = layers("lstm")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((*shape, 4))
    dy = rng.standard_normal((*shape, 6))
    optimizers = [fastrnn.optim.Adam(0.1), fastrnn.optim.Adam(0.1)]
    for _ in range(3):
        for layer, optimizer in zip((compiled, ref), optimizers):
            layer.zero_grad()
            layer.forward(x)
            layer.backward(dy)
            optimizer.step(layer.params, layer.grads)
        with fastrnn.no_grad():
            assert_same_forward(compiled, ref, x)
        assert_same_forward(compiled, ref, x)


def test_weights_replaced_by_load_state_dict_are_used_at_once():
    compiled, ref = layers("gru_reset_after")
    other = make_layer("gru_reset_after", 4, 6, dtype=np.float64, seed=99)
    x = np.random.default_rng(6).standard_normal((20, 8, 4))
    with fastrnn.no_grad():
        compiled.forward(x)
        compiled.load_state_dict(other.state_dict())
        ref.load_state_dict(other.state_dict())
        assert_same_forward(compiled, ref, x)
