"""Calls with `lengths` run only the real work (the packed layout of fastrnn/_kernels/scan.pyx):
the compiled cells and layers against the reference on the lengths patterns that stress it."""
import numpy as np
import pytest
from numpy.testing import assert_array_equal

import fastrnn
from cases import CASES, kernels, make_layer, reference
from test_kernels import TOLERANCE, assert_parity, make_problem, run_cell
from test_projection import make_problem as make_projected_problem


def lengths_pattern(name, T, B, rng):
    """int64 (B,) lengths of pattern `name`, in no particular order."""
    if name == "distinct":  # as many distinct lengths as there can be, 1 and T included
        lengths = np.resize(np.arange(T, 0, -1), B)
    elif name == "equal_short":  # every sequence shorter than T, all the same
        lengths = np.full(B, max(1, T // 3))
    elif name == "one_long":  # one sequence of T steps among sequences of 1 and 2
        lengths = rng.integers(1, 3, B)
        lengths[B // 2] = T
    else:  # "uniform": uniform in [1, T]
        lengths = rng.integers(1, T + 1, B)
    return rng.permutation(lengths).astype(np.int64)


PATTERNS = ["distinct", "equal_short", "one_long", "uniform"]
# Large enough (B >= 16, 2**24 multiply-adds with half the rows, 8 rows a thread) for a pass
# to split its batch among threads where the machine gives it more than one, see threads.pyx.
SHAPE = (24, 32, 64, 128)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("case", CASES)
def test_cell_with_lengths_matches_reference(case, pattern, reverse, dtype):
    T, B, D, H = SHAPE
    rng = np.random.default_rng(3)
    problem = make_problem(case, rng, dtype, T, B, D, H, scale=1 / np.sqrt(H))
    lengths = lengths_pattern(pattern, T, B, rng)
    actual = run_cell("cython", case, problem, lengths, reverse)
    assert_parity(actual, run_cell("reference", case, problem, lengths, reverse), dtype)
    # padding: outputs and input gradients exactly zero
    padding = np.arange(T)[:, None] >= lengths[None, :]
    assert_array_equal(actual["y"][padding], 0)
    assert_array_equal(actual["dx"][padding], 0)


@pytest.mark.parametrize("case", CASES)
def test_lengths_all_t_is_the_call_without_lengths(case):
    T, B, D, H = 6, 16, 5, 9
    problem = make_problem(case, np.random.default_rng(4), np.float64, T, B, D, H)
    with_lengths = run_cell("cython", case, problem, np.full(B, T, np.int64), True)
    without = run_cell("cython", case, problem, None, True)
    for name in without:
        assert_array_equal(with_lengths[name], without[name], err_msg=name)


def run_layer(case, backend, dtype, lengths, rng_seed=5):
    """Forward and backward of a 2-layer bidirectional layer of `case`: every result by name."""
    T, B, D, H = 12, 17, 6, 10
    rng = np.random.default_rng(rng_seed)
    layer = make_layer(case, D, H, num_layers=2, bidirectional=True, dtype=dtype, backend=backend,
                       seed=2)
    x = rng.standard_normal((T, B, D))
    y, state_n = layer(x, lengths=lengths)
    dy = rng.standard_normal(y.shape)
    dx, dstate0 = layer.backward(dy)
    results = {"y": y, "dx": dx}
    states = state_n if isinstance(state_n, tuple) else (state_n,)
    dstates = dstate0 if isinstance(dstate0, tuple) else (dstate0,)
    results.update({f"state_n[{i}]": s for i, s in enumerate(states)})
    results.update({f"dstate0[{i}]": d for i, d in enumerate(dstates)})
    results.update({f"grads[{k}]": g for k, g in layer.grads.items()})
    return results


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("pattern", ["distinct", "one_long"])
@pytest.mark.parametrize("case", CASES)
def test_bidirectional_stack_with_lengths_matches_reference(case, pattern, dtype):
    lengths = lengths_pattern(pattern, 12, 17, np.random.default_rng(6))
    actual = run_layer(case, "cython", dtype, lengths)
    desired = run_layer(case, "reference", dtype, lengths)
    assert actual.keys() == desired.keys()
    tol = TOLERANCE[dtype]
    for name in desired:
        scale = np.abs(desired[name]).max()
        np.testing.assert_allclose(actual[name], desired[name], rtol=tol, atol=tol * scale,
                                   err_msg=name)
    padding = np.arange(12)[:, None] >= lengths[None, :]
    assert_array_equal(actual["y"][padding], 0)
    assert_array_equal(actual["dx"][padding], 0)


def test_layer_with_lengths_matches_each_sequence_alone():
    """A sorted batch is undone: every sequence's results are those of a call on it alone."""
    rng = np.random.default_rng(8)
    T, B, D, H = 9, 16, 4, 6
    layer = fastrnn.LSTM(D, H, bidirectional=True, dtype=np.float64, seed=3)
    x = rng.standard_normal((T, B, D))
    lengths = rng.integers(1, T + 1, B)
    y, (h_n, c_n) = layer(x, lengths=lengths)
    for b in range(B):
        y_b, (h_b, c_b) = layer(x[:lengths[b], b:b + 1])
        np.testing.assert_allclose(y[:lengths[b], b:b + 1], y_b, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(h_n[:, b:b + 1], h_b, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(c_n[:, b:b + 1], c_b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("proj_size", [0, 5])
@pytest.mark.parametrize("case", ["lstm", "lstm_nf_peephole"])
def test_lstm_inference_with_lengths_matches_reference(case, proj_size, reverse):
    """keep=False on the packed layout (two state slots, the final states left in either) gives
    the training forward's results exactly, and the reference's, with and without projection."""
    T, B, D, H = 9, 12, 4, 8
    rng = np.random.default_rng(12)
    if proj_size:
        problem = make_projected_problem(case, rng, np.float64, T, B, D, H, proj_size)
    else:
        problem = make_problem(case, rng, np.float64, T, B, D, H)
    lengths = lengths_pattern("distinct", T, B, rng)  # lengths of both parities, 1 and T
    x, state0, params = problem["x"], problem["state0"], problem["params"]
    cell = CASES[case].cell
    y, state_n, cache = kernels(cell).forward(x, state0, params, lengths, reverse)
    y_inf, state_inf, cache_inf = kernels(cell).forward(x, state0, params, lengths, reverse,
                                                        keep=False)
    y_ref, state_ref, _ = reference(cell).forward(x, state0, params, lengths, reverse)
    assert cache is not None and cache_inf is None
    assert_array_equal(y_inf, y)
    tol = TOLERANCE[np.float64]
    np.testing.assert_allclose(y_inf, y_ref, rtol=tol, atol=tol)
    for final, final_inf, final_ref in zip(state_n, state_inf, state_ref):
        assert_array_equal(final_inf, final)
        np.testing.assert_allclose(final_inf, final_ref, rtol=tol, atol=tol)
