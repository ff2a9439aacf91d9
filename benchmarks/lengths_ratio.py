"""CPU time of calls with lengths against padded calls, one thread (BENCHMARKS.md, issue 9).

Usage: PYTHONPATH=. python benchmarks/lengths_ratio.py [repeats]. Prints per cell, shape, direction
and mode the ratio lengths time / padded time, the share of the work (sum(lengths) / (T*B)) and the
target 1.1 * share + 0.05, lengths uniform in [T/10, T] (bench_lengths, seed 0).
"""
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

import fastrnn
from fastrnn.tools.bench_core import bench_lengths

SHAPES = [(100, 64, 256, 256), (50, 16, 64, 64)]


def median_cpu_seconds(cls, shape, lengths, bidirectional, backward, repeats):
    """Median CPU time of `repeats` calls (forward, or forward+backward) of a float32 layer."""
    steps, batch, inputs, hidden = shape
    layer = cls(inputs, hidden, bidirectional=bidirectional, dtype=np.float32, seed=0)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((steps, batch, inputs), dtype=np.float32)
    dy = rng.standard_normal((steps, batch, hidden * (2 if bidirectional else 1)), dtype=np.float32)
    times = []
    for _ in range(repeats):
        start = time.process_time()
        layer(x, lengths=lengths)
        if backward:
            layer.backward(dy)
        times.append(time.process_time() - start)
    return float(np.median(times))


def main(repeats):
    with threadpool_limits(1):
        for name in ("LSTM", "GRU", "RNN"):
            for shape in SHAPES:
                lengths = bench_lengths(shape)
                share = lengths.sum() / (shape[0] * shape[1])
                target = 1.1 * share + 0.05
                count = repeats if shape[0] * shape[1] >= 4096 else 3 * repeats
                for bidirectional in (False, True):
                    for backward in (False, True):
                        cls = getattr(fastrnn, name)
                        median_cpu_seconds(cls, shape, None, bidirectional, backward, 2)  # warm-up
                        padded = median_cpu_seconds(cls, shape, None, bidirectional, backward, count)
                        ragged = median_cpu_seconds(cls, shape, lengths, bidirectional, backward, count)
                        ratio = ragged / padded
                        print(f"{name:4} {','.join(map(str, shape)):15} "
                              f"{'bidir' if bidirectional else 'one  '} "
                              f"{'fwd+bwd' if backward else 'fwd    '} padded {padded * 1e3:8.2f} ms "
                              f"lengths {ragged * 1e3:8.2f} ms ratio {ratio:.3f} work {share:.3f} "
                              f"target {target:.3f} {'met' if ratio <= target else 'MISSED'}",
                              flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
