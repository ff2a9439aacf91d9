"""What the benchmarks share: the passes they time, the timing loop, the machine's figures and the
table layout (fastrnn/tools/bench.py, bench_train.py and bench_mixed.py build on it)."""
import os
import platform
import textwrap
import time

import numpy as np

import fastrnn

SHAPES = [(50, 1, 32, 32), (50, 16, 64, 64), (100, 32, 128, 128), (100, 64, 256, 256), (50, 64, 512, 512)]
# --quick: the smallest, a middle and the largest shape, so that the run stays under a minute.
QUICK_SHAPES = [SHAPES[0], SHAPES[2], SHAPES[4]]
CELLS = {"lstm": (fastrnn.LSTM, 4), "gru": (fastrnn.GRU, 3), "rnn": (fastrnn.RNN, 1)}


MODES = ("forward", "forward+backward")


WIDTH = 100


def gemm_rate(size=2048, repeats=5):
    """FLOP/s that NumPy's BLAS reaches on a large float32 matrix product (best of `repeats`)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    np.dot(a, b)
    best = min(_seconds(lambda: np.dot(a, b)) for _ in range(repeats))
    return 2.0 * size ** 3 / best


def matmul_flops(cell, shape, mode):
    """FLOPs of the matrix products in one pass: input projection and recurrent product forward;
    in backward the same two products again for dx and dh plus dW_ih and dW_hh, so 3x."""
    steps, batch, inputs, hidden = shape
    gate_rows = CELLS[cell][1] * hidden
    forward = 2.0 * steps * batch * gate_rows * (inputs + hidden)
    return forward if mode == "forward" else 3 * forward


def _seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _fastrnn_pass(cell, shape, backend, mode, seed=0, lengths=None):
    steps, batch, inputs, hidden = shape
    rng = np.random.default_rng(seed)
    layer = CELLS[cell][0](inputs, hidden, backend=backend, seed=seed)
    x = rng.standard_normal((steps, batch, inputs), dtype=np.float32)
    dy = rng.standard_normal((steps, batch, hidden), dtype=np.float32)
    if mode == "forward":
        return lambda: layer(x, lengths=lengths)

    def step():
        layer(x, lengths=lengths)
        layer.backward(dy)
    return step


def bench_lengths(shape, seed=0):
    """The lengths of the bench's lengths rows: uniform in [T/10, T], seeded."""
    steps, batch = shape[:2]
    return np.random.default_rng(seed).integers(max(1, steps // 10), steps + 1, batch)


def _calls_per_round(fn, budget):
    """How many calls fit in `budget` seconds (at least 1), from one warm-up call."""
    elapsed = _seconds(fn)
    return max(1, min(200, int(budget / max(elapsed, 1e-6))))


# OpenBLAS and OpenMP worker threads keep spinning on a core for up to ~0.1 s after a call
# returns; the next implementation timed would lose that core. Each block of calls starts after
# this pause and one untimed call.
SETTLE_SECONDS = 0.15


def measure(passes, rounds, budget, inner=None):
    """Interleaved timing: per round, each pass runs its calls back to back.

    Returns, per pass name, the list of per-round medians of the call times in seconds. A pass
    may return a number of seconds (the time of a part of the call, timed by itself): when
    `inner` is a dict, inner[name] then receives the per-round medians of those numbers.
    """
    counts = {name: _calls_per_round(fn, budget) for name, fn in passes.items()}
    medians = {name: [] for name in passes}
    for _ in range(rounds):
        for name, fn in passes.items():
            time.sleep(SETTLE_SECONDS)
            fn()
            times, parts = [], []
            for _ in range(counts[name]):
                start = time.perf_counter()
                part = fn()
                times.append(time.perf_counter() - start)
                parts.append(part)
            medians[name].append(float(np.median(times)))
            if inner is not None and None not in parts:
                inner.setdefault(name, []).append(float(np.median(parts)))
    return medians


def blas_info():
    """One line per BLAS library loaded in this process (threadpoolctl is optional)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return ["threadpoolctl not installed: BLAS kernel and threads not shown"]
    return [
        f"{pool.get('internal_api')} {pool.get('version')} {pool.get('architecture')} "
        f"threads={pool.get('num_threads')} ({os.path.basename(pool.get('filepath', ''))})"
        for pool in threadpool_info() if pool.get("user_api") == "blas"
    ]


def import_peer(name, leave_out):
    """The module `name` (torch, jax), or None when left out or not installed."""
    if leave_out:
        return None
    try:
        return __import__(name)
    except ImportError:
        return None


def print_header(title, rounds, torch=None, jax=None, rate=None):
    """The lines every bench starts with: what runs, on what machine, with which BLAS."""
    threads = blas_threads()
    print(f"fastrnn {fastrnn.__version__} bench{title}: float32, {rounds} interleaved rounds, medians")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"NumPy {np.__version__}")
    if torch is not None:
        print(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    if jax is not None:
        print(f"jax {jax.__version__} (XLA's own CPU threads)")
    for line in blas_info():
        print(f"BLAS: {line}")
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if var in os.environ:
            print(f"env: {var}={os.environ[var]}")
    if rate is not None:
        print(f"NumPy sgemm rate (2048^3): {rate / 1e9:.1f} GFLOP/s")
    if "cython" in fastrnn.available_backends():
        print(textwrap.fill(cython_threading(threads), WIDTH))
    else:
        print("cython backend not available: only the reference and the peers are timed")


def settings(args):
    """(rounds, budget seconds per block of calls, shapes) of a kernel bench run."""
    rounds = args.rounds or (3 if args.quick else 7)
    shapes = args.shapes or (QUICK_SHAPES if args.quick else SHAPES)
    return rounds, (0.03 if args.quick else 0.2), shapes


def blas_threads():
    """The BLAS's thread setting (the largest over the BLAS libraries loaded), or the core count."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return os.cpu_count() or 1
    counts = [pool["num_threads"] for pool in threadpool_info() if pool.get("user_api") == "blas"]
    return max(counts) if counts else (os.cpu_count() or 1)


def figure(value):
    """A time or a ratio in at most 7 characters: 4 significant digits, whole numbers from 1000."""
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def percent(share):
    """A share between 0 and 1 as a whole percentage, e.g. "42%"."""
    return f"{100 * share:.0f}%"


def key_figure(key, fmt=figure):
    """A table cell: `fmt(row[key])`, or None (printed "-") when the row has no `key`."""
    return lambda row: fmt(row[key]) if key in row else None


def print_table_header(columns):
    """Print the header line and its rule for `columns`, a list of (title, width, row -> text or
    None); a negative width left-aligns the column."""
    header = " ".join(_aligned(title, width) for title, width, _ in columns).rstrip()
    print(header)
    print("-" * len(header))


def table_row(columns, row):
    """One line of the table for the dict `row`."""
    return " ".join(_aligned(text(row) or "-", width) for _, width, text in columns).rstrip()


def _aligned(text, width):
    return f"{text:<{-width}}" if width < 0 else f"{text:>{width}}"


def cython_threading(threads):
    """How the compiled kernels use the machine, in one line."""
    from .._kernels import products as _kernels

    products = ("a packed AVX-512 kernel" if _kernels._packed_products_supported()
                else "single-threaded BLAS calls")
    return (f"cython: each pass splits the batch over up to {threads} threads (the BLAS thread setting), "
            f"each running the whole time loop on its rows; per-step products in {products}; "
            "whole-sequence products split over the same threads (by rows of the result; the weight "
            "gradients by the rows they sum over)")
