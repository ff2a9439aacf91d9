"""Issue 8's kernel-side figures: one generation step, forward-only against torch's no_grad, and
a pass in a mixed loop (NumPy's BLAS just before each call).

    python -m benchmarks.inference_threads step   [--rounds N]   # LSTM(64, H), T = B = 1
    python -m benchmarks.inference_threads forward [--rounds N]  # the bench shapes, LSTM/GRU/RNN
    python -m benchmarks.inference_threads mixed  [--rounds N]   # LSTM (64, 32, 64, 128) fwd+bwd
    python -m benchmarks.inference_threads spin                  # NumPy's pool after a matmul

`step` and `forward` time CPU time (time.process_time) with every BLAS and torch on one thread,
interleaved rounds, minimum of each: on a busy machine that approaches an idle machine's figures.
`mixed` times the wall clock (it is about threads sharing cores: run it on an idle machine):
isolated, preceded by a 512x512 NumPy matmul, the same with the foreign-thread check off, and
single-threaded; medians of interleaved rounds, with the load average.
"""
import argparse
import contextlib
import os
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

import fastrnn
from fastrnn._kernels import threads

SHAPES = [(50, 1, 32, 32), (50, 16, 64, 64), (100, 32, 128, 128), (100, 64, 256, 256), (50, 64, 512, 512)]


def cpu_time(call, repeats):
    call()
    start = time.process_time()
    for _ in range(repeats):
        call()
    return (time.process_time() - start) / repeats


def best(calls, rounds, repeats):
    """Interleaved rounds of every call: the minimum CPU time of each."""
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            times[name].append(cpu_time(call, repeats))
    return {name: min(values) for name, values in times.items()}


def inference(layer, x):
    def call():
        with fastrnn.no_grad():
            layer.forward(x)
    return call


def step(rounds):
    for hidden in (64, 256, 512):
        x = np.random.default_rng(0).standard_normal((1, 1, 64)).astype(np.float32)
        calls = {backend: inference(fastrnn.LSTM(64, hidden, backend=backend, seed=0), x)
                 for backend in ("cython", "reference")}
        result = best(calls, rounds, 400 if hidden < 512 else 100)
        weight_bytes = 4 * 4 * hidden * (hidden + 64)  # W_hh and W_ih, float32
        print(f"H={hidden:4d}: cython {result['cython'] * 1e6:6.0f} us, reference "
              f"{result['reference'] * 1e6:6.0f} us, x{result['reference'] / result['cython']:.2f}; "
              f"{weight_bytes / result['cython'] / 1e9:.1f} GB/s of weights")


def forward(rounds):
    import torch
    torch.set_num_threads(1)
    for cell in ("LSTM", "GRU", "RNN"):
        for T, B, D, H in SHAPES:
            x = np.random.default_rng(0).standard_normal((T, B, D)).astype(np.float32)
            module, x_torch = getattr(torch.nn, cell)(D, H), torch.from_numpy(x)

            def torch_call():
                with torch.no_grad():
                    module(x_torch)
            calls = {"fastrnn": inference(getattr(fastrnn, cell)(D, H, seed=0), x), "torch": torch_call}
            result = best(calls, rounds, max(1, int(2e7 // (T * B * D * H))))
            print(f"{cell:4s} {(T, B, D, H)}: fastrnn {result['fastrnn'] * 1e3:8.3f} ms, torch "
                  f"{result['torch'] * 1e3:8.3f} ms, x{result['torch'] / result['fastrnn']:.2f}")


def mixed(rounds):
    T, B, D, H = 64, 32, 64, 128
    rng = np.random.default_rng(0)
    layer = fastrnn.LSTM(D, H, seed=0)
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    a = rng.standard_normal((512, 512)).astype(np.float32)
    check = threads._running_threads

    def run(before):
        walls = []
        for _ in range(10):
            before()
            start = time.perf_counter()
            layer.forward(x)
            layer.backward(dy)
            walls.append(time.perf_counter() - start)
        return statistics.median(walls)

    modes = {"isolated": lambda: None, "mixed": lambda: a @ a, "mixed, check off": lambda: a @ a,
             "1 thread": lambda: None, "1 thread, mixed": lambda: a @ a}
    times = {mode: [] for mode in modes}
    for _ in range(rounds):
        for mode, before in modes.items():
            threads._running_threads = (lambda exclude: 0) if "check off" in mode else check
            if mode.startswith("1 thread"):
                with threadpool_limits(1, user_api="blas"):
                    times[mode].append(run(before))
            else:
                times[mode].append(run(before))
    threads._running_threads = check
    print(f"load average {os.getloadavg()}")
    isolated = statistics.median(times["isolated"])
    for mode, values in times.items():
        median = statistics.median(values)
        print(f"{mode:18s} {median * 1e3:8.2f} ms  x{median / isolated:.2f} of isolated")


def spin(_rounds):
    """Which threads of the process are running after a NumPy matmul, and for how long."""
    a = np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32)
    own = threads._own_threads()
    for delay in (0, 0.001, 0.01, 0.05, 0.1, 0.2):
        a @ a
        time.sleep(delay)
        print(f"{delay * 1e3:5.0f} ms after a matmul: {threads._running_threads(own)} other thread(s) "
              f"running")
        time.sleep(0.5)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("step", "forward", "mixed", "spin"))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with threadpool_limits(1) if args.what in ("step", "forward") else contextlib.nullcontext():
        globals()[args.what](args.rounds)


if __name__ == "__main__":
    main()
