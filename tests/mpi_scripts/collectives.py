"""The collectives on 2 ranks that start out different: each rank writes what it ends up with.

`mpiexec -n 2 python collectives.py PREFIX` writes PREFIX.<rank>.npz; test_distributed.py checks
that rank 1 holds rank 0's parameters and optimizer state after the broadcasts, the shards, and
the combined metrics.
"""
import sys

import numpy as np

from fastrnn import distributed
from fastrnn._io import atomic_write
from fastrnn.optim import Adam


def rank_arrays(rank):
    """Parameters and gradients that differ from rank to rank, in two dtypes."""
    rng = np.random.default_rng(rank)
    params = {"w": rng.standard_normal((3, 4)), "b": rng.standard_normal(4).astype(np.float32)}
    grads = {"w": rng.standard_normal((3, 4)), "b": rng.standard_normal(4).astype(np.float32)}
    return params, grads


def main(prefix):
    distributed.abort_on_error()
    rank = distributed.rank()
    params, grads = rank_arrays(rank)
    optimizer = Adam(lr=0.1)
    for _ in range(rank + 1):  # rank 1's optimizer is a step further on
        optimizer.step(params, grads)
    distributed.broadcast_parameters(params)
    distributed.broadcast_optimizer_state(optimizer)
    mean = distributed.combine_metrics([rank + 1.0, 10.0 * rank], weight=rank + 1)
    total = distributed.combine_metrics([rank + 1.0], op="sum")
    total_weight = distributed.average_gradients(grads, weight=rank + 2)
    shard = distributed.shard(np.arange(10 * 5).reshape(10, 5), axis=1)
    with atomic_write(f"{prefix}.{rank}.npz") as file:
        np.savez(file, size=distributed.size(), mean=mean, total=total, total_weight=total_weight,
                 shard=shard, **{f"param/{k}": v for k, v in params.items()},
                 **{f"grad/{k}": v for k, v in grads.items()},
                 **{f"optim/{k}": v for k, v in optimizer.state_dict().items()})


if __name__ == "__main__":
    main(sys.argv[1])
