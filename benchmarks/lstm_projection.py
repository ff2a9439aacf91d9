"""CPU time of an LSTM pass with and without a projection (proj_size), on one thread.

    python -m benchmarks.lstm_projection [--rounds N] [--calls N]     # from the repository root

fastrnn.LSTM and, when installed, torch.nn.LSTM, float32, forward + backward at
(T, B, D, H) = (100, 32, 128, 128), proj_size 0 and 64. Everything runs on one thread (BLAS
through threadpoolctl, torch.set_num_threads(1)) and is timed with the process's CPU time, which
leaves out the time a busy machine keeps the process waiting; the rounds interleave the four
layers. Printed: the median over rounds of each layer's per-round median.
"""
import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

import fastrnn

T, B, D, H, P = 100, 32, 128, 128, 64


def fastrnn_pass(proj_size):
    layer = fastrnn.LSTM(D, H, proj_size=proj_size, seed=0)
    x = np.random.default_rng(0).standard_normal((T, B, D)).astype(np.float32)

    def run():
        y, _ = layer(x)
        layer.backward(np.ones_like(y))

    return run


def torch_pass(torch, proj_size):
    module = torch.nn.LSTM(D, H, proj_size=proj_size)
    x = torch.randn(T, B, D)

    def run():
        y, _ = module(x)
        y.sum().backward()

    return run


def per_call_cpu_seconds(run, calls):
    """The median CPU time of `calls` calls of run(), after one call to warm up."""
    run()
    times = []
    for _ in range(calls):
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    return float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default: 3)")
    parser.add_argument("--calls", type=int, default=20, help="timed calls per round (default: 20)")
    args = parser.parse_args(argv)
    passes = {f"fastrnn proj_size={p}": fastrnn_pass(p) for p in (0, P)}
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        torch.set_num_threads(1)
        passes.update({f"torch   proj_size={p}": torch_pass(torch, p) for p in (0, P)})
    results = {name: [] for name in passes}
    with threadpool_limits(1):
        for _ in range(args.rounds):
            for name, run in passes.items():
                results[name].append(per_call_cpu_seconds(run, args.calls))
    print(f"LSTM (T, B, D, H) = ({T}, {B}, {D}, {H}) float32, forward + backward, 1 thread, CPU time")
    for name, times in results.items():
        print(f"  {name:<24} {np.median(times) * 1e3:8.2f} ms")


if __name__ == "__main__":
    main()
