"""`python -m fastrnn bench`: the performance tables of BENCHMARKS.md.

Three benches, one process each, every contender on the same float32 arrays, the repeats
interleaved (cython, reference, torch, ..., cython, ...) so that a slow spell of this shared
machine hits all of them alike; each figure is the median over rounds of the per-round medians:

  bench            the recurrent passes alone (forward, forward+backward), against torch and JAX;
  bench --mixed    the same passes each preceded by a 512x512 NumPy matmul, as a Linear head does
                   in a training loop, beside the pass isolated and with the BLAS on 1 thread;
  bench --train    one char-LM training step end to end (embedding, recurrent stack, linear head,
                   loss, backward, clipping, Adam) against the same model in torch.

Every run ends with how busy the machine was, and a warning when it was too busy.
"""
import argparse
import os
import platform
import sys
import textwrap
import time

import numpy as np

import fastrnn
from ._cli import name_list, output_problem, positive_int, write_json
from .bench_machine import LoadWatch

SHAPES = [(50, 1, 32, 32), (50, 16, 64, 64), (100, 32, 128, 128), (100, 64, 256, 256), (50, 64, 512, 512)]
# --quick: the smallest, a middle and the largest shape, so that the run stays under a minute.
QUICK_SHAPES = [SHAPES[0], SHAPES[2], SHAPES[4]]
CELLS = {"lstm": (fastrnn.LSTM, 4), "gru": (fastrnn.GRU, 3), "rnn": (fastrnn.RNN, 1)}
MODES = ("forward", "forward+backward")
WIDTH = 100


def shape_list(text):
    """argparse type: semicolon-separated shapes of four positive integers T,B,D,H."""
    try:
        shapes = [tuple(int(v) for v in item.split(",")) for item in text.split(";") if item.strip()]
    except ValueError:
        shapes = []
    if not shapes or any(len(shape) != 4 or min(shape) < 1 for shape in shapes):
        raise argparse.ArgumentTypeError(f"expected T,B,D,H[;T,B,D,H...] of positive integers, got {text!r}")
    return shapes


def thread_list(text):
    """argparse type: comma-separated thread counts, each a positive integer or "default" (the
    BLAS's own setting); returned as ints and None for "default"."""
    settings = []
    for item in (item.strip().lower() for item in text.split(",")):
        if item == "default":
            settings.append(None)
        elif item.isdigit() and int(item) > 0:
            settings.append(int(item))
        else:
            raise argparse.ArgumentTypeError(f"expected a comma list of 'default' and positive integers, got {text!r}")
    return list(dict.fromkeys(settings))


def add_arguments(parser):
    """bench's options, on an argparse parser."""
    from .bench_train import model_list

    what = parser.add_mutually_exclusive_group()
    what.add_argument("--train", action="store_true",
                      help="time one char-LM training step end to end (see --models) instead of the "
                           "recurrent passes alone")
    what.add_argument("--mixed", action="store_true",
                      help="time each forward+backward pass after a 512x512 NumPy matmul, beside the "
                           "same pass isolated and with the BLAS on 1 thread; name the foreign threads "
                           "that run meanwhile")
    parser.add_argument("--quick", action="store_true",
                        help="short run: fewer rounds, calls and shapes (noisier figures)")
    parser.add_argument("--cells", type=name_list(CELLS, "cell_list"), default=list(CELLS),
                        help="comma-separated cells (default: lstm,gru,rnn)")
    parser.add_argument("--shapes", type=shape_list, default=None,
                        help="semicolon-separated T,B,D,H shapes (default: the five shapes of BENCHMARKS.md, "
                             "three of them with --quick)")
    parser.add_argument("--models", type=model_list, default=None,
                        help="with --train: semicolon-separated CELL,LAYERS,T,B,H models, CELL lstm or gru "
                             "(default: from lstm,1,40,16,32 to lstm,2,50,64,512)")
    parser.add_argument("--threads", type=thread_list, default=[None, 1],
                        help="with --train: comma-separated thread settings, 'default' (the BLAS's own) "
                             "or a count (default: default,1)")
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
    """The lengths of the lengths rows: uniform in [T/10, T], seeded."""
    steps, batch = shape[:2]
    return np.random.default_rng(seed).integers(max(1, steps // 10), steps + 1, batch)


def lengths_row(padded, times, lengths):
    """The row of the call with `lengths` (its `times` in seconds, measured with the padded
    call's) beside the padded call's row: its time over the padded time, and its share of the
    padded work, sum(lengths) / (T*B)."""
    steps, batch = padded["shape"][:2]
    row = {"cell": padded["cell"], "mode": padded["mode"], "shape": padded["shape"],
           "lengths": "uniform [T/10, T]", "cython_ms": 1e3 * float(np.median(times)),
           "cython_spread": max(times) / min(times), "work_share": lengths.sum() / (steps * batch)}
    row["lengths_vs_padded"] = row["cython_ms"] / padded["cython_ms"]
    return row


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


def run(args):
    """Run the bench `args` ask for; returns the exit code."""
    problem = args.json and output_problem(args.json, "--json")
    if problem:
        print(f"python -m fastrnn bench: error: {problem}", file=sys.stderr)  # now, not after the run
        return 2
    if args.models is not None and not args.train:
        print("python -m fastrnn bench: error: argument --models: only with --train", file=sys.stderr)
        return 2
    watch = LoadWatch()
    if args.train:
        from .bench_train import run_train as bench
    elif args.mixed:
        from .bench_mixed import run_mixed as bench
    else:
        bench = run_kernels
    summary = bench(args)
    machine, lines = watch.report()
    for line in lines:
        print(textwrap.fill(line, WIDTH, subsequent_indent="  "))
    if args.json:
        summary["machine"] = machine
        if not write_json(args.json, summary, "bench"):
            return 2
        print(f"wrote {args.json}")
    return 0


def settings(args):
    """(rounds, budget seconds per block of calls, shapes) of a kernel bench run."""
    rounds = args.rounds or (3 if args.quick else 7)
    shapes = args.shapes or (QUICK_SHAPES if args.quick else SHAPES)
    return rounds, (0.03 if args.quick else 0.2), shapes


def run_kernels(args):
    """The recurrent passes alone against the reference, torch and JAX; returns the JSON summary."""
    rounds, budget, shapes = settings(args)
    backends = fastrnn.available_backends()
    torch = import_peer("torch", args.no_torch)
    if torch is not None:
        torch.set_num_threads(blas_threads())
    jax = import_peer("jax", args.no_jax)
    rate = gemm_rate()
    print_header("", rounds, torch, jax, rate)
    contenders = [name for name, present in (("cython", "cython" in backends), ("reference", not args.no_reference),
                                             ("torch", torch is not None), ("jax", jax is not None)) if present]
    columns = kernel_columns(contenders)
    print("times in ms; x PEER: PEER's time over cython's")
    print_table_header(columns)
    results = []
    for cell in args.cells:
        for mode in MODES:
            for shape in shapes:
                passes = {}
                if "cython" in backends:
                    passes["cython"] = _fastrnn_pass(cell, shape, "cython", mode)
                    passes["lengths"] = _fastrnn_pass(cell, shape, "cython", mode,
                                                      lengths=bench_lengths(shape))
                if not args.no_reference:
                    passes["reference"] = _fastrnn_pass(cell, shape, "reference", mode)
                if torch is not None:
                    passes["torch"] = _torch_pass(torch, cell, shape, mode)
                if jax is not None:
                    passes["jax"] = _jax_pass(jax, cell, shape, mode)
                medians = measure(passes, rounds, budget)
                lengths_times = medians.pop("lengths", None)
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
                print(table_row(columns, row), flush=True)
                if lengths_times is not None:
                    results.append(lengths_row(row, lengths_times, bench_lengths(shape)))
                    print(table_row(columns, results[-1]), flush=True)
    return {"gemm_rate_flops": rate, "rounds": rounds, "blas": blas_info(),
            "torch": getattr(torch, "__version__", None), "jax": getattr(jax, "__version__", None),
            "results": results}


def cython_threading(threads):
    """How the compiled kernels use the machine, in one line."""
    from .._kernels import products as _kernels

    products = ("a packed AVX-512 kernel" if _kernels._packed_products_supported()
                else "single-threaded BLAS calls")
    return (f"cython: each pass splits the batch over up to {threads} threads (the BLAS thread setting), "
            f"each running the whole time loop on its rows; per-step products in {products}; "
            "whole-sequence products split over the same threads (by rows of the result; the weight "
            "gradients by the rows they sum over)")


def blas_threads():
    """The BLAS's thread setting (the largest over the BLAS libraries loaded), or the core count."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return os.cpu_count() or 1
    counts = [pool["num_threads"] for pool in threadpool_info() if pool.get("user_api") == "blas"]
    return max(counts) if counts else (os.cpu_count() or 1)


# -- tables -----------------------------------------------------------------------------------------


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


def kernel_columns(contenders):
    """The kernel table's columns for the contenders timed (cython, reference, torch, jax)."""
    titles = {"cython": "cython", "reference": "ref", "torch": "torch", "jax": "jax"}
    columns = [("cell", -4, lambda row: row["cell"]),
               ("mode", -11, lambda row: {"forward": "fwd", "forward+backward": "fwd+bwd"}[row["mode"]]
                                         + (" len" if "lengths" in row else "")),
               ("T,B,D,H", -14, lambda row: ",".join(map(str, row["shape"])))]
    columns += [(titles[name], 7, key_figure(f"{name}_ms")) for name in contenders]
    columns += [(f"x {titles[peer]}", 7, key_figure(f"speedup_vs_{peer}"))
                for peer in contenders if peer != "cython" and "cython" in contenders]
    columns += [("len/pad", 7, key_figure("lengths_vs_padded")),
                ("work", 5, key_figure("work_share", fmt=percent)),
                ("GEMM %", 6, key_figure("gemm_share", fmt=percent)),
                ("spread", 6, key_figure("cython_spread", fmt=lambda v: f"{v:.2f}"))]
    return columns
