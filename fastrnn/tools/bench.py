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
import sys
import textwrap

import numpy as np

import fastrnn
from ._cli import name_list, output_problem, positive_int, write_json
from .bench_core import (CELLS, MODES, WIDTH, _fastrnn_pass, bench_lengths, blas_info, blas_threads,
                         gemm_rate, import_peer, key_figure, matmul_flops, measure, percent, print_header,
                         print_table_header, settings, table_row)
from .bench_machine import LoadWatch


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


# -- tables -----------------------------------------------------------------------------------------


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
