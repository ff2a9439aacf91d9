"""The compiled kernels (fastrnn._kernels), called directly through the cell contract of
fastrnn/_backends.py: parity with the NumPy reference for every cell and option, threads, the GIL,
the floating-point mode, and untouched inputs."""
import importlib.machinery
import multiprocessing
import os
import threading

import numpy as np
import pytest
import threadpoolctl
from numpy.testing import assert_allclose, assert_array_equal

# Imported directly, without importorskip: a broken build must fail here, not skip.
from fastrnn._kernels import products, threads
from cases import CASES, kernels, make_params, num_states, reference

# Parity tolerance per dtype: relative, and the same fraction of each array's largest entry as
# absolute tolerance, for entries near zero (sums that cancel, gates near 0).
TOLERANCE = {np.float64: 1e-12, np.float32: 1e-5}

# (T, B, D, H, lengths, reverse, bias): odd sizes, B = 1, T = 1, H = 1, unsorted lengths
# including 1 and T, both directions, with and without biases.
SHAPES = {
    "H7": (5, 3, 4, 7, None, False, True),
    "H7_lengths_reverse": (5, 3, 4, 7, (3, 1, 5), True, True),
    "H7_lengths_no_bias": (5, 4, 3, 7, (2, 5, 1, 4), False, False),
    "T1_H1_reverse": (1, 2, 3, 1, None, True, True),
    "B1_H33": (6, 1, 2, 33, None, False, True),
    "H33_lengths_reverse": (4, 2, 6, 33, (4, 1), True, True),
    # T*B = 520 rows, PACKED_MIN_ROWS (fastrnn/_kernels/products.pyx): the whole-sequence products with x or
    # dgates on the left run in matmul_packed; D = 19 and G*H are not multiples of its panels
    "TB520_D19_H11": (65, 8, 19, 11, None, False, True),
}


def make_problem(case, rng, dtype, T, B, D, H, bias=True, scale=0.5):
    """Inputs, upstream gradients and nonzero starting grads for one cell call, all random."""
    cell = CASES[case].cell
    params = make_params(case, rng, dtype, D, H, bias, scale)
    return {
        "x": rng.standard_normal((T, B, D)).astype(dtype),
        "state0": tuple(rng.standard_normal((B, H)).astype(dtype) for _ in range(num_states(cell))),
        "params": params,
        "dy": rng.standard_normal((T, B, H)).astype(dtype),
        "dstate_n": tuple(rng.standard_normal((B, H)).astype(dtype) for _ in range(num_states(cell))),
        "grads": {k: None if p is None else rng.standard_normal(p.shape).astype(dtype)
                  for k, p in params.items()},
    }


def as_lengths(lengths):
    return None if lengths is None else np.array(lengths, dtype=np.int64)


def run_cell(backend, case, problem, lengths, reverse):
    """Forward then backward through `backend` ("cython" or "reference"): every result by name."""
    cell, options, _ = CASES[case]
    module = kernels(cell) if backend == "cython" else reference(cell)
    forward, backward = module.forward, module.backward
    x, state0, params = problem["x"], problem["state0"], problem["params"]
    y, state_n, cache = forward(x, state0, params, lengths, reverse, **options)
    grads = {k: None if g is None else g.copy() for k, g in problem["grads"].items()}
    dx, dstate0 = backward(problem["dy"], problem["dstate_n"], cache, grads)
    results = {"y": y, "dx": dx}
    results.update({f"state_n[{i}]": s for i, s in enumerate(state_n)})
    results.update({f"dstate0[{i}]": d for i, d in enumerate(dstate0)})
    results.update({f"grads[{k}]": g for k, g in grads.items() if g is not None})
    return results


def assert_parity(actual, desired, dtype):
    assert actual.keys() == desired.keys()
    tol = TOLERANCE[dtype]
    for name in desired:
        assert actual[name].dtype == dtype, name
        scale = np.abs(desired[name]).max()
        assert_allclose(actual[name], desired[name], rtol=tol, atol=tol * scale, err_msg=name)


@pytest.fixture(params=["packed", "blas"])
def step_products(request):
    """Per-step (and whole-sequence, from PACKED_MIN_ROWS rows) products in matmul_packed
    (AVX-512 CPUs) or in BLAS, for the test's duration."""
    if request.param == "packed" and not products._packed_products_supported():
        reason = ("this CPU lacks AVX-512" if products._packed_products_compiled()
                  else "this build's compiler lacks the AVX-512 target")
        pytest.skip(f"{reason}: per-step products always use BLAS")
    previous = products._use_packed_products(request.param == "packed")
    yield request.param
    products._use_packed_products(previous)


@pytest.mark.parametrize("cell", sorted({case.cell for case in CASES.values()}))
def test_extension_is_compiled(cell):
    module = kernels(cell)
    assert module.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    assert callable(module.forward)
    assert callable(module.backward)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("case", CASES)
def test_matches_reference(case, shape, dtype, step_products):
    T, B, D, H, lengths, reverse, bias = SHAPES[shape]
    problem = make_problem(case, np.random.default_rng(7), dtype, T, B, D, H, bias)
    lengths = as_lengths(lengths)
    assert_parity(
        run_cell("cython", case, problem, lengths, reverse),
        run_cell("reference", case, problem, lengths, reverse),
        dtype,
    )


# Large enough for a pass to split its batch among threads (MIN_ROWS rows each, PARALLEL_MACS
# multiply-adds in all, see _kernels/threads.pyx), with 16 rows per thread: two blocks of matmul_packed.
# Passes large enough to be split among threads (2**24 multiply-adds, 8 batch rows a thread).
# The first shape of each cell has T*B >= SPLIT_SUM_MIN_ROWS (512), so the threads split the
# weight gradients' sums; the last has fewer rows, so they split the rows of the gradients.
# Between them, the weight gradients run both in matmul_tn ((M + N) <= 640) and in BLAS.
THREADED = {
    "rnn": [(30, 32, 64, 256), (3, 64, 256, 256)],
    "lstm": [(26, 32, 64, 128), (40, 16, 64, 64), (5, 32, 128, 128)],
    "lstm_nf": [(34, 32, 64, 128), (6, 32, 128, 128)],
    "gru": [(34, 32, 64, 128), (6, 32, 128, 128)],
}
THREADED_CASES = [(case, shape) for case in CASES for shape in THREADED[CASES[case][0]]]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("case", "shape"), THREADED_CASES)
def test_matches_reference_when_split_among_threads(case, shape, dtype, step_products):
    T, B, D, H = shape
    rng = np.random.default_rng(11)
    problem = make_problem(case, rng, dtype, T, B, D, H, scale=1 / np.sqrt(H))
    lengths = rng.integers(1, T + 1, B)  # reverse with lengths: the most index arithmetic
    assert_parity(
        run_cell("cython", case, problem, lengths, True),
        run_cell("reference", case, problem, lengths, True),
        dtype,
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES)
def test_saturated_gates_give_the_reference_outputs(case, dtype):
    # Weights of ±20 drive the gates to 0 and 1, where subnormal numbers arise (the kernels flush
    # them to zero: differences below the smallest normal number). The outputs keep parity; the
    # gradients through saturated units are ill-conditioned (one ulp of tanh(x) ≈ ±1 changes
    # 1 - tanh² entirely), so of those only finiteness is checked.
    problem = make_problem(case, np.random.default_rng(3), dtype, 8, 4, 5, 6, scale=20.0)
    lengths = as_lengths((8, 2, 5, 1))
    actual = run_cell("cython", case, problem, lengths, False)
    desired = run_cell("reference", case, problem, lengths, False)
    outputs = [name for name in desired if name == "y" or name.startswith("state_n")]
    assert_parity({n: actual[n] for n in outputs}, {n: desired[n] for n in outputs}, dtype)
    for name, array in actual.items():
        assert np.all(np.isfinite(array)), name


@pytest.mark.parametrize("case", CASES)
def test_inputs_are_not_modified(case):
    problem = make_problem(case, np.random.default_rng(5), np.float32, 5, 3, 4, 7)
    lengths = as_lengths((2, 5, 4))
    inputs = {"x": problem["x"], "dy": problem["dy"], "lengths": lengths}
    inputs.update({f"state0[{i}]": s for i, s in enumerate(problem["state0"])})
    inputs.update({f"dstate_n[{i}]": d for i, d in enumerate(problem["dstate_n"])})
    inputs.update({f"params[{k}]": p for k, p in problem["params"].items() if p is not None})
    originals = {name: array.copy() for name, array in inputs.items()}
    for array in inputs.values():
        array.flags.writeable = False  # read-only inputs are accepted, too
    run_cell("cython", case, problem, lengths, True)
    for name, array in inputs.items():
        assert_array_equal(array, originals[name], err_msg=name)


# (T, B, D, H): results from np.empty, and results large enough for the kernels' block cache.
RESULT_SIZES = {"small": (4, 3, 5, 6), "cached": (20, 16, 8, 64)}


@pytest.mark.parametrize("size", RESULT_SIZES)
def test_returned_arrays_are_not_reused_by_later_calls(size):
    T, B, D, H = RESULT_SIZES[size]
    problems = [make_problem("lstm", np.random.default_rng(seed), np.float64, T, B, D, H) for seed in (2, 9)]
    first = run_cell("cython", "lstm", problems[0], None, False)
    kept = {name: array.copy() for name, array in first.items()}
    run_cell("cython", "lstm", problems[1], None, False)
    for name in kept:
        assert_array_equal(first[name], kept[name], err_msg=name)


@pytest.mark.parametrize("size", RESULT_SIZES)
def test_returned_arrays_are_writeable_and_c_contiguous(size):
    T, B, D, H = RESULT_SIZES[size]
    problem = make_problem("lstm", np.random.default_rng(4), np.float32, T, B, D, H)
    results = run_cell("cython", "lstm", problem, None, False)
    for name, array in results.items():
        assert array.flags.writeable and array.flags.c_contiguous, name


def test_memory_of_dropped_results_gives_the_reference_results_again():
    # The blocks of a dropped pass's arrays (cached, not freed) hold its values: the next pass of
    # the same shape takes them and must overwrite every entry it returns.
    T, B, D, H = RESULT_SIZES["cached"]
    for seed in (12, 13):
        problem = make_problem("gru_reset_after", np.random.default_rng(seed), np.float64, T, B, D, H)
        assert_parity(
            run_cell("cython", "gru_reset_after", problem, as_lengths(range(1, B + 1)), True),
            run_cell("reference", "gru_reset_after", problem, as_lengths(range(1, B + 1)), True),
            np.float64,
        )


def long_problem(seed):
    """An LSTM call of a few hundred milliseconds."""
    return make_problem("lstm", np.random.default_rng(seed), np.float64, 100, 64, 128, 128, scale=0.1)


def test_kernel_call_releases_the_gil():
    problem = make_problem("lstm", np.random.default_rng(6), np.float64, 200, 64, 128, 128, scale=0.1)
    inside = threading.Event()

    def call():  # one C call of several tenths of a second
        inside.set()
        kernels("lstm").forward(problem["x"], problem["state0"], problem["params"], None, False)

    worker = threading.Thread(target=call)
    worker.start()
    inside.wait()
    # Python work of a few tens of milliseconds: had the worker kept the GIL through its call,
    # this loop could only finish after the call.
    for _ in range(1_000_000):
        pass
    assert worker.is_alive()
    worker.join()


def test_concurrent_calls_give_the_sequential_results():
    calls = [(long_problem(4), False), (long_problem(8), True)]  # (problem, reverse)
    sequential = [run_cell("cython", "lstm", problem, None, reverse) for problem, reverse in calls]
    concurrent = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def call(i):
        barrier.wait()
        concurrent[i] = run_cell("cython", "lstm", calls[i][0], None, calls[i][1])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # One of the concurrent calls runs without the helper threads (another pass holds them), and
    # the weight gradients sum over the rows in one slice per thread: equal up to rounding.
    for expected, actual in zip(sequential, concurrent):
        for name in expected:
            scale = np.abs(expected[name]).max()
            assert_allclose(actual[name], expected[name], rtol=1e-12, atol=1e-13 * scale, err_msg=name)


def threaded_lstm_matches_reference():
    """Whether a pass split among threads gives the reference results (in a child process)."""
    T, B, D, H = THREADED["lstm"][0]
    problem = make_problem("lstm", np.random.default_rng(2), np.float64, T, B, D, H)
    try:
        assert_parity(run_cell("cython", "lstm", problem, None, False),
                      run_cell("reference", "lstm", problem, None, False), np.float64)
    except AssertionError:
        os._exit(1)
    os._exit(0)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork here")
def test_threaded_pass_runs_in_a_forked_child():
    # The parent's helper threads (started by this pass) do not exist in a forked child: the
    # child must start its own rather than wait for them forever.
    T, B, D, H = THREADED["lstm"][0]
    run_cell("cython", "lstm", make_problem("lstm", np.random.default_rng(1), np.float64, T, B, D, H),
             None, False)
    child = multiprocessing.get_context("fork").Process(target=threaded_lstm_matches_reference)
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0


def test_floating_point_mode_of_the_caller_is_restored():
    # The kernels flush subnormals to zero during a pass (in every thread of it: this problem is
    # split among threads and saturates the gates); afterwards the caller's arithmetic must still
    # produce them.
    T, B, D, H = THREADED["lstm"][0]
    problem = make_problem("lstm", np.random.default_rng(1), np.float32, T, B, D, H, scale=20.0)
    run_cell("cython", "lstm", problem, None, False)
    assert np.float32(1e-39) * np.float32(1) != 0
    assert np.finfo(np.float64).tiny / 2 > 0


def test_blas_thread_setting_of_the_caller_is_restored():
    blas = threads._blas_controllers()
    if not blas:
        pytest.skip("threadpoolctl finds no BLAS behind scipy")
    with threadpoolctl.threadpool_limits(3, user_api="blas"):
        # a pass runs BLAS single-threaded, then hands this back
        run_cell("cython", "lstm", long_problem(4), None, False)
        assert [lib.get_num_threads() for lib in blas] == [3] * len(blas)
