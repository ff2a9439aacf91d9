"""Pure-NumPy reference cells: docs/math.md written out line by line, to read and to check against.

Each module (`rnn`, `lstm`, `lstm_nf`, `gru`) provides the two functions of the cell-kernel contract that
fastrnn/_backends.py documents:

    forward(x, state0, params, lengths, reverse, **options) -> (y, state_n, cache)
    backward(dy, dstate_n, cache, grads) -> (dx, dstate0)

for one direction of one layer on time-major (T, B, ·) arrays, in the dtype of `x` (float32 or
float64). `backward` is BPTT through that forward call and ADDS the parameter gradients into
`grads` in place. Stacking, directions, batch_first, dropout and argument checks are the layer
driver's job (fastrnn/_layer.py). `backend="reference"` runs these; the Cython kernels must agree.
"""
from . import gru, lstm, lstm_nf, rnn

__all__ = ["gru", "lstm", "lstm_nf", "rnn"]
