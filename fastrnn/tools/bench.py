"""`python -m fastrnn bench`: the performance table of SPEC §7.

Every implementation runs the same float32 pass on the same arrays, in one process, with the
repeats interleaved (cython, reference, torch, jax, cython, ...) so that a slow spell of this shared
machine hits all of them alike. Each cell of the table is the median over rounds of the per-round
median time; `spread` is the largest over the smallest per-round median of the cython rows.
"""
import argparse
import os
import platform
import time

import numpy as np

import fastrnn
from ._cli import name_list, positive_int, write_json

SHAPES = [(50, 1, 32, 32), (50, 16, 64, 64), (100, 32, 128, 128), (100, 64, 256, 256), (50, 64, 512, 512)]
CELLS = {"lstm": (fastrnn.LSTM, 4), "gru": (fastrnn.GRU, 3), "rnn": (fastrnn.RNN, 1)}
MODES = ("forward", "forward+backward")


def shape_list(text):
    """argparse type: semicolon-separated shapes of four positive integers T,B,D,H."""
    try:
        shapes = [tuple(int(v) for v in item.split(",")) for item in text.split(";") if item.strip()]
    except ValueError:
        shapes = []
    if not shapes or any(len(shape) != 4 or min(shape) < 1 for shape in shapes):
        raise argparse.ArgumentTypeError(f"expected T,B,D,H[;T,B,D,H...] of positive integers, got {text!r}")
    return shapes


def add_arguments(parser):
    parser.add_argument("--quick", action="store_true",
                        help="short run: fewer rounds and calls per round (noisier figures)")
    parser.add_argument("--cells", type=name_list(CELLS, "cell_list"), default=list(CELLS),
                        help="comma-separated cells (default: lstm,gru,rnn)")
    parser.add_argument("--shapes", type=shape_list, default=SHAPES,
                        help="semicolon-separated T,B,D,H shapes (default: the five shapes of SPEC §7)")
    parser.add_argument("--rounds", type=positive_int, default=None,
                        help="interleaved rounds per measurement (default: 7, or 3 with --quick)")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out even when installed")
    parser.add_argument("--no-jax", action="store_true", help="leave JAX out even when installed")
    parser.add_argument("--no-reference", action="store_true", help="leave the NumPy reference out")
    parser.add_argument("--json", metavar="FILE", help="also write the results to FILE as JSON")


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


def _fastrnn_pass(cell, shape, backend, mode, seed=0):
    steps, batch, inputs, hidden = shape
    rng = np.random.default_rng(seed)
    layer = CELLS[cell][0](inputs, hidden, backend=backend, seed=seed)
    x = rng.standard_normal((steps, batch, inputs), dtype=np.float32)
    dy = rng.standard_normal((steps, batch, hidden), dtype=np.float32)
    if mode == "forward":
        return lambda: layer(x)

    def step():
        layer(x)
        layer.backward(dy)
    return step


def _torch_pass(torch, cell, shape, mode, seed=0):
    steps, batch, inputs, hidden = shape
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell](inputs, hidden)
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal((steps, batch, inputs), dtype=np.float32))
    dy = torch.from_numpy(rng.standard_normal((steps, batch, hidden), dtype=np.float32))
    if mode == "forward":
        def step():
            with torch.no_grad():
                module(x)
        return step
    x.requires_grad_(True)

    def step():
        x.grad = None
        module.zero_grad(set_to_none=True)
        module(x)[0].backward(dy)
    return step


def _jax_step(jnp, cell):
    """One step of `cell` in JAX, PyTorch's equations: (w_hh, b_hh, state, x_t.W_ihᵀ + b_ih) ->
    (state, h)."""
    def sigmoid(v):
        return 1 / (1 + jnp.exp(-v))

    def lstm(w_hh, b_hh, state, xw):
        h, c = state
        i, f, g, o = jnp.split(xw + h @ w_hh.T + b_hh, 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * jnp.tanh(g)
        h = sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    def gru(w_hh, b_hh, state, xw):
        (h,) = state
        xr, xz, xn = jnp.split(xw, 3, axis=-1)
        hr, hz, hn = jnp.split(h @ w_hh.T + b_hh, 3, axis=-1)
        r, z = sigmoid(xr + hr), sigmoid(xz + hz)
        h = (1 - z) * jnp.tanh(xn + r * hn) + z * h
        return (h,), h

    def rnn(w_hh, b_hh, state, xw):
        (h,) = state
        h = jnp.tanh(xw + h @ w_hh.T + b_hh)
        return (h,), h
    return {"lstm": lstm, "gru": gru, "rnn": rnn}[cell]


def _jax_pass(jax, cell, shape, mode, seed=0):
    """The pass in JAX, as the issue measured it: the input projection of all steps, then the
    step under jax.lax.scan, jit-compiled; forward+backward is jax.grad of sum(y * dy)."""
    import jax.numpy as jnp
    steps, batch, inputs, hidden = shape
    gate_rows = CELLS[cell][1] * hidden
    rng = np.random.default_rng(seed)
    bound = 1 / np.sqrt(hidden)
    params = {name: jnp.asarray(rng.uniform(-bound, bound, size).astype(np.float32))
              for name, size in (("w_ih", (gate_rows, inputs)), ("w_hh", (gate_rows, hidden)),
                                 ("b_ih", (gate_rows,)), ("b_hh", (gate_rows,)))}
    x = jnp.asarray(rng.standard_normal((steps, batch, inputs), dtype=np.float32))
    dy = jnp.asarray(rng.standard_normal((steps, batch, hidden), dtype=np.float32))
    state0 = tuple(jnp.zeros((batch, hidden), jnp.float32) for _ in range(2 if cell == "lstm" else 1))
    step = _jax_step(jnp, cell)

    def outputs(params, x):
        xw = x @ params["w_ih"].T + params["b_ih"]
        return jax.lax.scan(lambda state, xw_t: step(params["w_hh"], params["b_hh"], state, xw_t),
                            state0, xw)[1]

    if mode == "forward":
        forward = jax.jit(outputs)
        return lambda: forward(params, x).block_until_ready()
    gradients = jax.jit(jax.grad(lambda params, x: jnp.sum(outputs(params, x) * dy), argnums=(0, 1)))
    return lambda: jax.block_until_ready(gradients(params, x))


def _calls_per_round(fn, budget):
    """How many calls fit in `budget` seconds (at least 1), from one warm-up call."""
    elapsed = _seconds(fn)
    return max(1, min(200, int(budget / max(elapsed, 1e-6))))


# OpenBLAS and OpenMP worker threads keep spinning on a core for up to ~0.1 s after a call
# returns; the next implementation timed would lose that core. Each block of calls starts after
# this pause and one untimed call.
SETTLE_SECONDS = 0.15


def measure(passes, rounds, budget):
    """Interleaved timing: per round, each pass runs its calls back to back; returns, per pass,
    the list of per-round medians in seconds."""
    counts = {name: _calls_per_round(fn, budget) for name, fn in passes.items()}
    medians = {name: [] for name in passes}
    for _ in range(rounds):
        for name, fn in passes.items():
            time.sleep(SETTLE_SECONDS)
            fn()
            times = [_seconds(fn) for _ in range(counts[name])]
            medians[name].append(float(np.median(times)))
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


def run(args):
    cells, shapes = args.cells, args.shapes
    rounds = args.rounds or (3 if args.quick else 7)
    budget = 0.05 if args.quick else 0.2
    backends = fastrnn.available_backends()
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            torch = None
    threads = _blas_threads()
    if torch is not None:
        torch.set_num_threads(threads)
    jax = None
    if not args.no_jax:
        try:
            import jax
        except ImportError:
            jax = None

    rate = gemm_rate()
    print(f"fastrnn {fastrnn.__version__} bench: float32, {rounds} interleaved rounds, medians")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"NumPy {np.__version__}" + (f", torch {torch.__version__} ({threads} threads)" if torch else "")
          + (f", jax {jax.__version__} (XLA's own CPU threads)" if jax else ""))
    for line in blas_info():
        print(f"BLAS: {line}")
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if var in os.environ:
            print(f"env: {var}={os.environ[var]}")
    print(f"NumPy sgemm rate (2048^3): {rate / 1e9:.1f} GFLOP/s")
    if "cython" in backends:
        print(cython_threading(threads))
    else:
        print("cython backend not available: only the reference and the peers are timed")

    header = (f"{'cell':5} {'mode':16} {'T,B,D,H':18} {'cython ms':>10} {'ref ms':>9} {'torch ms':>9} "
              f"{'jax ms':>9} {'x ref':>7} {'x torch':>8} {'x jax':>7} {'GEMM %':>7} {'spread':>7}")
    print(header)
    print("-" * len(header))
    results = []
    for cell in cells:
        for mode in MODES:
            for shape in shapes:
                passes = {}
                if "cython" in backends:
                    passes["cython"] = _fastrnn_pass(cell, shape, "cython", mode)
                if not args.no_reference:
                    passes["reference"] = _fastrnn_pass(cell, shape, "reference", mode)
                if torch is not None:
                    passes["torch"] = _torch_pass(torch, cell, shape, mode)
                if jax is not None:
                    passes["jax"] = _jax_pass(jax, cell, shape, mode)
                medians = measure(passes, rounds, budget)
                row = {"cell": cell, "mode": mode, "shape": list(shape)}
                for name, values in medians.items():
                    row[f"{name}_ms"] = 1e3 * float(np.median(values))
                    row[f"{name}_spread"] = max(values) / min(values)
                    row[f"{name}_rounds_ms"] = [1e3 * value for value in values]
                if "cython_ms" in row:
                    for peer in ("reference", "torch", "jax"):
                        if f"{peer}_ms" in row:
                            row[f"speedup_vs_{peer}"] = row[f"{peer}_ms"] / row["cython_ms"]
                    row["gemm_share"] = matmul_flops(cell, shape, mode) / (row["cython_ms"] / 1e3) / rate
                results.append(row)
                print(_format_row(row), flush=True)

    if args.json:
        summary = {"gemm_rate_flops": rate, "rounds": rounds, "blas": blas_info(),
                   "torch": getattr(torch, "__version__", None), "jax": getattr(jax, "__version__", None),
                   "results": results}
        if not write_json(args.json, summary, "bench"):
            return 2
        print(f"wrote {args.json}")
    return 0


def cython_threading(threads):
    """How the compiled kernels use the machine, in one line."""
    from .._kernels import products as _kernels

    products = ("a packed AVX-512 kernel" if _kernels._packed_products_supported()
                else "single-threaded BLAS calls")
    return (f"cython: each pass splits the batch over up to {threads} threads (the BLAS thread setting), "
            f"each running the whole time loop on its rows; per-step products in {products}; "
            "whole-sequence products split over the same threads (by rows of the result; the weight "
            "gradients by the rows they sum over)")


def _blas_threads():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return os.cpu_count() or 1
    counts = [pool["num_threads"] for pool in threadpool_info() if pool.get("user_api") == "blas"]
    return max(counts) if counts else (os.cpu_count() or 1)


def _format_row(row):
    def cell(key, fmt, width):
        return f"{row[key]:{width}{fmt}}" if key in row else f"{'-':>{width}}"
    shape = ",".join(str(v) for v in row["shape"])
    return (f"{row['cell']:5} {row['mode']:16} {shape:18} {cell('cython_ms', '.3f', 10)} "
            f"{cell('reference_ms', '.3f', 9)} {cell('torch_ms', '.3f', 9)} {cell('jax_ms', '.3f', 9)} "
            f"{cell('speedup_vs_reference', '.1f', 7)} {cell('speedup_vs_torch', '.2f', 8)} "
            f"{cell('speedup_vs_jax', '.2f', 7)} "
            + (f"{100 * row['gemm_share']:6.0f}%" if "gemm_share" in row else f"{'-':>7}")
            + f" {cell('cython_spread', '.2f', 7)}")
