"""The cost of the gradient-norm record (docs/layers.md §13): CPU time of one forward + backward
with `record_gradient_norms` off and on, single-threaded, the two interleaved.

    python -m benchmarks.gradient_record [--repeats N]     # from the repository root

One thread (threadpoolctl), the process's CPU time (time.process_time), so that other work on a
shared machine counts as little as possible. Prints the median time of each and their ratio.
"""
import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

import fastrnn

# (label, cell class, T, B, D, H)
CONFIGS = (
    ("LSTM (100, 32, 128, 128)", fastrnn.LSTM, 100, 32, 128, 128),
    ("GRU (100, 32, 128, 128)", fastrnn.GRU, 100, 32, 128, 128),
    ("RNN (100, 32, 128, 128)", fastrnn.RNN, 100, 32, 128, 128),
)


def step_seconds(layer, x, dy, record):
    """CPU seconds of one forward + backward."""
    layer.record_gradient_norms = record
    start = time.process_time()
    layer.forward(x)
    layer.backward(dy)
    return time.process_time() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="interleaved pairs (default: %(default)s)")
    args = parser.parse_args()
    print(f"float32, backend cython, 1 thread, CPU time, median of {args.repeats} interleaved pairs")
    with threadpool_limits(1):
        for label, cls, steps, batch, inputs, hidden in CONFIGS:
            rng = np.random.default_rng(0)
            layer = cls(inputs, hidden, backend="cython", seed=0)
            x = rng.standard_normal((steps, batch, inputs)).astype(np.float32)
            dy = rng.standard_normal((steps, batch, hidden)).astype(np.float32)
            for record in (False, True):  # warm-up
                step_seconds(layer, x, dy, record)
            times = {False: [], True: []}
            for _ in range(args.repeats):
                for record in (False, True):
                    times[record].append(step_seconds(layer, x, dy, record))
            off, on = np.median(times[False]), np.median(times[True])
            print(f"{label:<26} off {off * 1e3:7.2f} ms   on {on * 1e3:7.2f} ms   on/off {on / off:.3f}")


if __name__ == "__main__":
    main()
