"""`python -m fastrnn bench --mixed`: the recurrent passes as they run inside a training loop.

In a user's loop NumPy's BLAS runs between the recurrent calls (a Linear head, the loss), and its
worker threads keep spinning for a while after each product. Each row times one float32
forward+backward pass three ways, interleaved:

  isolated   the pass alone, calls back to back;
  mixed      each call preceded by a 512x512 float32 np.dot (untimed: only the pass is timed);
  1 thread   the mixed loop with every BLAS library limited to 1 thread (threadpoolctl), which
             also limits fastrnn's kernels, as they follow the BLAS setting.

Then, untimed, the pass runs again isolated and mixed while the CPU time of every thread of the
process is read around each call (their CPU clocks). Threads that work during the
isolated pass, and the main thread, belong to the pass; any other thread that takes more than FOREIGN_SHARE of the
mixed pass's wall time holds a core the pass could have used, and is named in the table: the
threads were labelled first by running NumPy's and SciPy's BLAS and a cython pass alone.
"""
import textwrap
import threading
import time

import numpy as np

import fastrnn
from .bench_core import WIDTH, _fastrnn_pass, key_figure, measure, percent, print_header, settings, print_table_header, table_row
from .bench_machine import cpu_during, label_threads

MATMUL_SIZE = 512
# A thread outside the pass that runs for more than this share of the pass's wall time is shown.
FOREIGN_SHARE = 0.05
VARIANTS = ("isolated", "mixed", "single")
ISOLATED_LIMIT = 1.15


def timed(fn, before=None):
    """A call that runs `before()` untimed, then `fn()`, and returns fn's seconds."""
    def call():
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    return call


def single_thread(fn):
    """`fn` run with every BLAS library limited to one thread, the setting restored after."""
    from threadpoolctl import ThreadpoolController

    controller = ThreadpoolController()

    def call():
        with controller.limit(limits=1, user_api="blas"):
            return fn()
    return call


def matmul_probes(a, b):
    """(label, fn) pairs that make each thread pool of the process work (see label_threads)."""
    from scipy.linalg import blas

    probes = [("NumPy BLAS", lambda: np.dot(a, b)), ("SciPy BLAS", lambda: blas.sgemm(1.0, a, b))]
    if "cython" in fastrnn.available_backends():
        probes.append(("fastrnn", _fastrnn_pass("lstm", (20, 64, 128, 128), "cython", "forward+backward")))
    return probes


def foreign_threads(pass_fn, matmul, calls, labels):
    """The threads outside the pass that ran while it ran after `matmul`: a list of dicts with the
    thread id, its label, its CPU milliseconds per pass and its share of the pass's wall time."""
    wall, used = cpu_during(pass_fn, calls)
    own = {thread for thread, seconds in used.items() if seconds > FOREIGN_SHARE * wall}
    own.add(threading.get_native_id())
    wall, used = cpu_during(pass_fn, calls, before=matmul)
    return [{"thread": thread, "label": labels.get(thread, "other"), "cpu_ms": 1e3 * seconds / calls,
             "share": seconds / wall}
            for thread, seconds in sorted(used.items(), key=lambda item: -item[1])
            if thread not in own and seconds > FOREIGN_SHARE * wall]


def run_mixed(args):
    """The mixed table; returns the JSON summary."""
    rounds, budget, shapes = settings(args)
    backends = [name for name in fastrnn.available_backends()
                if not (name == "reference" and args.no_reference)]
    print_header(" --mixed", rounds)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((MATMUL_SIZE, MATMUL_SIZE), dtype=np.float32)
    b = rng.standard_normal((MATMUL_SIZE, MATMUL_SIZE), dtype=np.float32)

    def matmul():
        np.dot(a, b)

    labels = label_threads(matmul_probes(a, b))
    print(textwrap.fill("threads: " + ", ".join(f"{thread} {label}" for thread, label in sorted(labels.items())),
                        WIDTH, subsequent_indent="  "))
    print(f"forward+backward, times in ms; mixed: after a {MATMUL_SIZE}x{MATMUL_SIZE} np.dot; 1-thr: mixed, "
          "BLAS on 1 thread")
    print(f"foreign: threads outside the pass running > {FOREIGN_SHARE:.0%} of the mixed pass's time")
    columns = mixed_columns()
    print_table_header(columns)
    results = []
    for cell in args.cells:
        for shape in shapes:
            for backend in backends:
                pass_fn = _fastrnn_pass(cell, shape, backend, "forward+backward")
                passes = {"isolated": timed(pass_fn), "mixed": timed(pass_fn, matmul),
                          "single": single_thread(timed(pass_fn, matmul))}
                inner = {}
                measure(passes, rounds, budget, inner)
                row = {"cell": cell, "shape": list(shape), "backend": backend}
                for name in VARIANTS:
                    row[f"{name}_ms"] = 1e3 * float(np.median(inner[name]))
                    row[f"{name}_rounds_ms"] = [1e3 * value for value in inner[name]]
                row["mixed_vs_isolated"] = row["mixed_ms"] / row["isolated_ms"]
                row["mixed_vs_single"] = row["mixed_ms"] / row["single_ms"]
                calls = max(3, min(50, int(2 * budget / (row["isolated_ms"] / 1e3))))
                row["foreign_threads"] = foreign_threads(pass_fn, matmul, calls, labels)
                results.append(row)
                print(table_row(columns, row), flush=True)
                for thread in row["foreign_threads"]:
                    print(f"    thread {thread['thread']} ({thread['label']}) ran {thread['cpu_ms']:.3g} ms "
                          f"per mixed pass, {thread['share']:.0%} of its wall time")
    cython_rows = [row for row in results if row["backend"] == "cython"]
    if cython_rows:
        print(target_summary(cython_rows))
    return {"rounds": rounds, "matmul_size": MATMUL_SIZE, "thread_labels": {str(k): v for k, v in labels.items()},
            "results": results}


def target_summary(rows):
    """One line: in how many rows the mixed pass was no slower than the 1-thread one, and within
    ISOLATED_LIMIT of the isolated one where no foreign thread ran (issue 8's targets)."""
    not_slower = sum(row["mixed_vs_single"] <= 1.0 for row in rows)
    quiet = [row for row in rows if not row["foreign_threads"]]
    close = sum(row["mixed_vs_isolated"] <= ISOLATED_LIMIT for row in quiet)
    return (f"cython rows: mixed <= 1-thr in {not_slower} of {len(rows)}; mixed <= {ISOLATED_LIMIT}x isolated "
            f"in {close} of {len(quiet)} without foreign threads")


def mixed_columns():
    """The --mixed table's columns."""
    def foreign(row):
        if not row["foreign_threads"]:
            return "none"
        top = row["foreign_threads"][0]
        return f"{top['label']} {percent(top['share'])}"

    return [("cell", -4, lambda row: row["cell"]), ("T,B,D,H", -14, lambda row: ",".join(map(str, row["shape"]))),
            ("backend", -9, lambda row: row["backend"]),
            ("isolated", 8, key_figure("isolated_ms")), ("mixed", 7, key_figure("mixed_ms")),
            ("1-thr", 7, key_figure("single_ms")),
            ("mix/iso", 7, key_figure("mixed_vs_isolated", fmt=lambda v: f"{v:.2f}")),
            ("mix/1thr", 8, key_figure("mixed_vs_single", fmt=lambda v: f"{v:.2f}")),
            ("foreign", -16, foreign)]
