"""The public recurrent layers: each names its cell (fastrnn/_cells.py); `_layer` does the rest."""
from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from ._checks import flag
from ._docstrings import shared_sections
from ._layer import RecurrentLayer
from ._typing import Seed


_SHAPE_PARAMETERS = """\
    input_size : int
        Features per step of the input, D (>= 1).
    hidden_size : int
        Hidden units per direction, H (>= 1).
    num_layers : int, default 1
        Stacked layers; layer l > 0 reads the (T, B, H * dirs) output of layer l - 1.
    bias : bool, default True
        Whether the layer has the biases b_ih and b_hh.
    batch_first : bool, default False
        Whether batched input and output are (B, T, ·) instead of (T, B, ·). States are always
        (num_layers * dirs, B, H); unbatched input is unaffected.
    bidirectional : bool, default False
        Also run every layer backwards in time (dirs = 2), outputs concatenated on the last axis.
    dropout : float, default 0.0
        Probability in [0, 1] of zeroing an input element of layers l > 0, in training mode.
"""

_COMMON_PARAMETERS = """\
    dtype : numpy dtype, default numpy.float32
        float32 or float64: the dtype of the parameters, outputs and gradients (inputs of other
        float dtypes are converted).
    backend : {"auto", "cython", "reference"}, default "auto"
        "cython": the compiled kernels; "reference": the pure-NumPy cells; "auto": the compiled
        kernels when they import, else the reference with a RuntimeWarning.
    seed : int, numpy.random.Generator or None, default None
        Source of the initial weights (uniform in ±1/sqrt(H)) and of the dropout masks.

    Notes
    -----
    Call the layer (or ``forward``) with x (T, B, D) (``batch_first``: (B, T, D)) or an unbatched
    x (T, D); ``backward`` backpropagates through that call. Parameters ``params``, gradients
    ``grads``: dicts of arrays with PyTorch's names and shapes (``weight_ih_l0`` (G * H, D),
    ``weight_hh_l0`` (G * H, H), ``bias_ih_l0``, ``bias_hh_l0`` (G * H,), suffix ``_reverse`` for
    the backward direction), G the number of gate rows. See docs/layers.md and docs/math.md.
"""
_documented = shared_sections(shape_parameters=_SHAPE_PARAMETERS, common_parameters=_COMMON_PARAMETERS)


@_documented
class LSTM(RecurrentLayer):
    """Long short-term memory layer (gate rows i, f, g, o), optionally with peepholes.

    `forget_gate=False` gives the cell of Hochreiter & Schmidhuber 1997 (gate rows i, g, o,
    c_t = c_{t-1} + i * g); with peepholes, it has the rows p_i and p_o only (w_peep (2, H)).
    State is a tuple `(h, c)` of (num_layers * dirs, B, H) arrays ((num_layers * dirs, H) for
    unbatched input). See docs/math.md and docs/layers.md.

    Parameters
    ----------
    %(shape_parameters)s
    peephole : bool, default False
        Add the peephole weights ``weight_peephole_l*`` (3, H), or (2, H) without forget gate.
    forget_gate : bool, default True
        False: the LSTM without forget gate (gate rows i, g, o).
    proj_size : int, default 0
        P, 0 < P < hidden_size, projects h as torch's ``nn.LSTM(proj_size=P)`` (Sak et al. 2014):
        h_t = W_hr (o_t * tanh(c_t)), parameters ``weight_hr_l*`` (P, H); h, the outputs and
        W_hh's columns have size P, c keeps H. 0: no projection.
    recurrent_init : {"uniform", "orthogonal"}, default "uniform"
        "orthogonal": each gate's (H, H) block of every ``weight_hh`` a random orthogonal matrix
        (gain 1), drawn after the other parameters (docs/layers.md §1).
    forget_bias : float, default 0.0
        Added to the forget gate's rows of every ``bias_ih`` after the draw (Keras's
        unit_forget_bias habit); needs the forget gate and bias=True.
    %(common_parameters)s
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *, bias: bool = True,
                 batch_first: bool = False, bidirectional: bool = False, dropout: float = 0.0,
                 peephole: bool = False, forget_gate: bool = True, proj_size: int = 0,
                 dtype: DTypeLike = np.float32, backend: str = "auto", seed: Seed = None,
                 recurrent_init: str = "uniform", forget_bias: float = 0.0) -> None:
        self.forget_gate = flag("forget_gate", forget_gate)
        self.cell = "lstm" if self.forget_gate else "lstm_nf"
        super().__init__(input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first,
                         bidirectional=bidirectional, dropout=dropout, peephole=peephole,
                         proj_size=proj_size, dtype=dtype, backend=backend, seed=seed,
                         recurrent_init=recurrent_init, forget_bias=forget_bias)
        self._fix_attributes("forget_gate")

    def _repr_options(self):
        return {} if self.forget_gate else {"forget_gate": False}


@_documented
class GRU(RecurrentLayer):
    """Gated recurrent unit layer (gate rows r, z, n), h_t = (1 - z) * n + z * h_{t-1}.

    `reset_after=True` (default, as PyTorch/cuDNN) applies r to W_hn h + b_hn; False applies it to
    h before the product (Cho et al. 2014). State is an array h of (num_layers * dirs, B, H)
    ((num_layers * dirs, H) for unbatched input).

    Parameters
    ----------
    %(shape_parameters)s
    reset_after : bool, default True
        Where the reset gate applies, as above.
    %(common_parameters)s
    """

    cell = "gru"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *, bias: bool = True,
                 batch_first: bool = False, bidirectional: bool = False, dropout: float = 0.0,
                 reset_after: bool = True, dtype: DTypeLike = np.float32, backend: str = "auto",
                 seed: Seed = None, recurrent_init: str = "uniform") -> None:
        super().__init__(input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first,
                         bidirectional=bidirectional, dropout=dropout, dtype=dtype,
                         backend=backend, seed=seed, recurrent_init=recurrent_init,
                         reset_after=reset_after)


@_documented
class RNN(RecurrentLayer):
    """Elman recurrent layer, h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), act tanh or relu.

    State is an array h of (num_layers * dirs, B, H) ((num_layers * dirs, H) for unbatched
    input).

    Parameters
    ----------
    %(shape_parameters)s
    nonlinearity : {"tanh", "relu"}, default "tanh"
        The activation act.
    %(common_parameters)s
    """

    cell = "rnn"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *, bias: bool = True,
                 batch_first: bool = False, bidirectional: bool = False, dropout: float = 0.0,
                 nonlinearity: str = "tanh", dtype: DTypeLike = np.float32, backend: str = "auto",
                 seed: Seed = None, recurrent_init: str = "uniform") -> None:
        super().__init__(input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first,
                         bidirectional=bidirectional, dropout=dropout, dtype=dtype,
                         backend=backend, seed=seed, recurrent_init=recurrent_init,
                         nonlinearity=nonlinearity)
