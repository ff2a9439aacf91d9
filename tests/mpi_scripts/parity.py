"""k training steps of small LSTM and GRU models, data-parallel over the ranks it runs on.

`mpiexec -n N python parity.py OUT.npz` trains every case of CASES with each rank on its shard of
every global batch and rank 0 writes the final parameters (and the gradient norm of each step)
to OUT.npz; test_distributed.py calls `train` in its own process on the whole batches and
compares. Float64, clipping that bites, Adam, the recurrent state carried from step to step.
"""
import sys

import numpy as np

from fastrnn import GRU, LSTM, Linear, available_backends, clip_grad_norm, distributed
from fastrnn._io import atomic_write
from fastrnn.losses import softmax_cross_entropy
from fastrnn.optim import Adam, merge

CELLS = {"lstm": LSTM, "gru": GRU}
# (cell, global batch): 4 splits evenly over 2 ranks, 5 does not (3 + 2 rows).
CASES = [(cell, batch) for cell in CELLS for batch in (4, 5)]
STEPS, SEQ_LEN, INPUTS, HIDDEN, LAYERS, CLASSES = 3, 6, 3, 5, 2, 4
MAX_NORM = 0.05  # below every step's gradient norm, so clipping scales every step


def train(cell, batch, steps=STEPS):
    """(parameters after `steps` steps, gradient norms before clipping) on this rank's shards."""
    backend = "cython" if "cython" in available_backends() else "reference"
    rng = np.random.default_rng(7)  # the same on every rank: the same global batches everywhere
    rnn = CELLS[cell](INPUTS, HIDDEN, LAYERS, dtype=np.float64, backend=backend, seed=rng)
    head = Linear(HIDDEN, CLASSES, dtype=np.float64, seed=rng)
    params, grads = merge(rnn=rnn.params, head=head.params), merge(rnn=rnn.grads, head=head.grads)
    optimizer = Adam(lr=0.01)
    distributed.broadcast_parameters(params)
    distributed.broadcast_optimizer_state(optimizer)
    state, norms = None, []
    for _ in range(steps):
        x = distributed.shard(rng.standard_normal((SEQ_LEN, batch, INPUTS)), axis=1)
        targets = distributed.shard(rng.integers(0, CLASSES, (SEQ_LEN, batch)), axis=1)
        rnn.zero_grad()
        head.zero_grad()
        y, state = rnn(x, state)
        logits = head(y)
        _, dlogits = softmax_cross_entropy(logits.reshape(-1, CLASSES), targets.reshape(-1))
        rnn.backward(head.backward(dlogits.reshape(logits.shape)))
        distributed.average_gradients(grads, weight=targets.size)
        norms.append(clip_grad_norm(grads, MAX_NORM))
        optimizer.step(params, grads)
    return {name: array.copy() for name, array in params.items()}, np.array(norms)


def main(out):
    distributed.abort_on_error()
    results = {}
    for cell, batch in CASES:
        params, norms = train(cell, batch)
        results.update({f"{cell}/{batch}/{name}": array for name, array in params.items()})
        results[f"{cell}/{batch}/norms"] = norms
    if distributed.is_root():
        with atomic_write(out) as file:
            np.savez(file, size=distributed.size(), **results)


if __name__ == "__main__":
    main(sys.argv[1])
