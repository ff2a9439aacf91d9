"""The public recurrent layers: each names its cell (fastrnn/_cells.py); `_layer` does the rest."""
import numpy as np

from ._checks import flag
from ._layer import RecurrentLayer


class LSTM(RecurrentLayer):
    """Long short-term memory layer (gate rows i, f, g, o), optionally with peepholes.

    `forget_gate=False` gives the cell of Hochreiter & Schmidhuber 1997 (gate rows i, g, o,
    c_t = c_{t-1} + i * g); with peepholes, it has the rows p_i and p_o only (w_peep (2, H)).
    State is a tuple `(h, c)` of (num_layers * dirs, B, H) arrays. `forget_bias` is added to
    the forget gate's rows of every bias_ih after the draw; `recurrent_init="orthogonal"` makes
    each gate's block of every weight_hh a random orthogonal matrix. See docs/math.md and
    docs/layers.md.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, *, bias=True, batch_first=False,
                 bidirectional=False, dropout=0.0, peephole=False, forget_gate=True,
                 dtype=np.float32, backend="auto", seed=None, recurrent_init="uniform",
                 forget_bias=0.0):
        self.forget_gate = flag("forget_gate", forget_gate)
        self.cell = "lstm" if self.forget_gate else "lstm_nf"
        super().__init__(input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first,
                         bidirectional=bidirectional, dropout=dropout, peephole=peephole,
                         dtype=dtype, backend=backend, seed=seed, recurrent_init=recurrent_init,
                         forget_bias=forget_bias)
        self._fix_attributes("forget_gate")

    def _repr_options(self):
        return {} if self.forget_gate else {"forget_gate": False}


class GRU(RecurrentLayer):
    """Gated recurrent unit layer (gate rows r, z, n), h_t = (1 - z) * n + z * h_{t-1}.

    `reset_after=True` (default, as PyTorch/cuDNN) applies r to W_hn h + b_hn; False applies it to
    h before the product (Cho et al. 2014). State is an array h of (num_layers * dirs, B, H).
    """

    cell = "gru"

    def __init__(self, input_size, hidden_size, num_layers=1, *, bias=True, batch_first=False,
                 bidirectional=False, dropout=0.0, reset_after=True, dtype=np.float32,
                 backend="auto", seed=None, recurrent_init="uniform"):
        super().__init__(input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first,
                         bidirectional=bidirectional, dropout=dropout, dtype=dtype,
                         backend=backend, seed=seed, recurrent_init=recurrent_init,
                         reset_after=reset_after)


class RNN(RecurrentLayer):
    """Elman recurrent layer, h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), act tanh or relu.

    State is an array h of (num_layers * dirs, B, H).
    """

    cell = "rnn"

    def __init__(self, input_size, hidden_size, num_layers=1, *, bias=True, batch_first=False,
                 bidirectional=False, dropout=0.0, nonlinearity="tanh", dtype=np.float32,
                 backend="auto", seed=None, recurrent_init="uniform"):
        super().__init__(input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first,
                         bidirectional=bidirectional, dropout=dropout, dtype=dtype,
                         backend=backend, seed=seed, recurrent_init=recurrent_init,
                         nonlinearity=nonlinearity)
