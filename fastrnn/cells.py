"""Step-wise cells: `LSTMCell`, `GRUCell`, `RNNCell`, one time step per call, as torch's cells.

A layer runs a whole sequence in one call; a cell runs one step, so that the input of step t can
depend on the output of step t-1 (a decoder that feeds its own prediction back, scheduled
sampling, generation). The cells use the layers' kernels (one step of the fused forward and
backward of `fastrnn._backends`; no gate arithmetic in Python on the compiled backend) and
torch's parameter names and layout: `weight_ih` (G·H, D), `weight_hh` (G·H, H), `bias_ih`,
`bias_hh` (G·H,), and `weight_peephole` (3, H) for `LSTMCell(peephole=True)`.

Backpropagation through time is a tape: every forward call outside `fastrnn.no_grad()` records
its step, and every `backward` call consumes the most recent record (last in, first out). So a
loop that ran steps 0 .. T-1 forward backpropagates them by calling `backward` T times, from step
T-1 down to 0, each time with the gradient w.r.t. that step's output state: what the step's own
output received plus what the next step's `backward` returned. `clear_tape()` drops records
left over (for example after a forward whose loss was not backpropagated).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from . import _backends
from ._cells import CELLS
from ._checks import flag, float_array, positive_int, random_generator
from ._docstrings import shared_sections
from ._grad_mode import is_grad_enabled
from ._init import apply_init_options, check_forget_bias, check_recurrent_init
from ._layer import _PARAM_PREFIX
from ._module import Module
from ._typing import Seed, State

__all__ = ["LSTMCell", "GRUCell", "RNNCell"]

_SIZE_PARAMETERS = """\
    input_size : int
        Features of the input x, D (>= 1).
    hidden_size : int
        Hidden units, H (>= 1).
"""

_COMMON_PARAMETERS = """\
    dtype : numpy.float32 or numpy.float64
        The dtype of the parameters, states and gradients.
    backend : "auto", "cython" or "reference"
        As the layers': the compiled kernels, the pure-NumPy reference, or the first that runs.
    seed : None, int or numpy.random.Generator
        Initial weights from U(-1/√H, 1/√H), as torch.
"""

_documented = shared_sections(size_parameters=_SIZE_PARAMETERS, common_parameters=_COMMON_PARAMETERS)



class RecurrentCell(Module):
    """One step of a recurrent cell with a tape for BPTT; subclasses name the cell's spec
    (fastrnn/_cells.py), which gives its gates, state, parameter shapes and options."""

    cell = None

    def __init__(self, input_size, hidden_size, bias=True, *, peephole=False, dtype=np.float32,
                 backend="auto", seed=None, recurrent_init="uniform", forget_bias=0.0,
                 **cell_options):
        spec = CELLS[self.cell]
        self.num_gates, self.state_names = spec.num_gates, spec.state_names
        self._cell_options = spec.check_options(cell_options)
        self.recurrent_init = check_recurrent_init(recurrent_init)
        self.forget_bias = check_forget_bias(forget_bias, spec, bool(bias))
        super().__init__(dtype)
        self.input_size = positive_int("input_size", input_size)
        self.hidden_size = positive_int("hidden_size", hidden_size)
        self.bias = flag("bias", bias)
        self.peephole = flag("peephole", peephole)
        self.backend = _backends.resolve_backend(backend, self.cell)
        self._forward_fn, self._backward_fn = _backends.cell_functions(self.backend, self.cell)
        rng = random_generator(seed)
        shapes = spec.param_shapes(self.input_size, self.hidden_size, self.bias, self.peephole)
        bound = 1.0 / np.sqrt(self.hidden_size)
        self._params, self._grads = {}, {}
        for short, prefix in _PARAM_PREFIX.items():
            if short in shapes:
                # Drawn in float64 so a float32 and a float64 cell of one seed agree.
                weights = rng.uniform(-bound, bound, size=shapes[short])
                self._params[short], self._grads[short] = self._add_param(prefix, weights)
            else:
                self._params[short] = self._grads[short] = None
        apply_init_options(rng, self._params, spec, self.hidden_size, self.recurrent_init,
                           self.forget_bias)
        self._fix_attributes("input_size", "hidden_size", "bias", "peephole", "backend", "cell",
                             "recurrent_init", "forget_bias", **self._cell_options)

    @property
    def _tape(self):
        """The calling thread's recorded steps: each thread unrolls its own sequence."""
        tape = getattr(self._local, "tape", None)
        if tape is None:
            tape = self._local.tape = []
        return tape

    def __repr__(self):
        options = [f"{self.input_size}", f"{self.hidden_size}"]
        if not self.bias:
            options.append("bias=False")
        if self.peephole:
            options.append("peephole=True")
        if not getattr(self, "forget_gate", True):
            options.append("forget_gate=False")
        options += [f"{key}={value!r}" for key, value in self._cell_options.items()]
        if self.recurrent_init != "uniform":
            options.append(f"recurrent_init={self.recurrent_init!r}")
        if self.forget_bias:
            options.append(f"forget_bias={self.forget_bias}")
        options += [f"dtype={self.dtype.name}", f"backend={self.backend!r}"]
        return f"{type(self).__name__}({', '.join(options)})"

    @property
    def tape_length(self) -> int:
        """The number of recorded steps that `backward` has not consumed yet."""
        return len(self._tape)

    def clear_tape(self) -> None:
        """Drop every recorded step (their memory is freed)."""
        self._tape.clear()

    def forward(self, x: ArrayLike, state: Optional[State] = None) -> State:
        """One step: the state after it, from input `x` and the state before it.

        Parameters
        ----------
        x : array (B, input_size), or (input_size,) for one unbatched sequence
        state : the state before the step, zeros when None: an array (B, hidden_size) (or
            (hidden_size,) unbatched) for `GRUCell`/`RNNCell`, a tuple (h, c) of those for
            `LSTMCell`.

        Returns
        -------
        The new state, fresh arrays shaped like `state`: h (its output) for `GRUCell`/`RNNCell`,
        (h, c) for `LSTMCell`. Outside `fastrnn.no_grad()` the step is recorded for `backward`.
        """
        x = float_array("x", x, self.dtype, copy=True)
        if x.ndim not in (1, 2) or x.shape[-1] != self.input_size:
            raise ValueError(f"x must have shape (B, {self.input_size}) or ({self.input_size},), got {x.shape}")
        unbatched = x.ndim == 1
        batch = 1 if unbatched else x.shape[0]
        if batch == 0:
            raise ValueError(f"x must have at least one row, got shape {x.shape}")
        states = self._check_state("state", state, batch, unbatched, copy=True)
        keep = is_grad_enabled()
        y, state_n, cache = self._forward_fn(
            x.reshape(1, batch, self.input_size), states, self._params, None, False, keep=keep,
            **self._cell_options
        )
        if keep:
            self._tape.append((cache, batch, unbatched))
        return self._pack_state(state_n, unbatched)

    def backward(self, dstate: Optional[State]) -> Tuple[np.ndarray, State]:
        """BPTT through the most recently recorded step, which the call consumes.

        Parameters
        ----------
        dstate : the gradient w.r.t. that step's output state, shaped like it (an array, or a
            tuple (dh, dc) for `LSTMCell`; None, or None parts, mean zeros).

        Returns
        -------
        (dx, dstate_prev): the gradients w.r.t. the step's input and the state before the step,
        shaped like them. The parameter gradients are added into `grads`.
        """
        if not self._tape:
            raise RuntimeError(
                f"{type(self).__name__}.backward needs a recorded step: every forward outside "
                "fastrnn.no_grad() records one, and every backward consumes the latest"
            )
        cache, batch, unbatched = self._tape[-1]
        dstates = self._check_state("dstate", dstate, batch, unbatched)
        dy = np.zeros((1, batch, self.hidden_size), self.dtype)  # the output is the state: all in dstate
        self._tape.pop()
        dx, dstate0 = self._backward_fn(dy, dstates, cache, self._grads)
        dx = dx.reshape(self.input_size) if unbatched else dx.reshape(batch, self.input_size)
        return dx, self._pack_state(dstate0, unbatched)

    def _check_state(self, name, state, batch, unbatched, copy=False):
        """`state` as a tuple of C-contiguous (B, H) arrays, zeros for None (or None parts)."""
        shape = (self.hidden_size,) if unbatched else (batch, self.hidden_size)
        if len(self.state_names) == 1:
            if isinstance(state, (tuple, list)):
                raise TypeError(f"{name} must be an array of shape {shape} for {type(self).__name__}, "
                                f"got a {type(state).__name__}")
            parts = (state,)
        elif state is None:
            parts = (None,) * len(self.state_names)
        else:
            if not isinstance(state, (tuple, list)) or len(state) != len(self.state_names):
                pair = ", ".join(self.state_names)
                raise TypeError(f"{name} must be a tuple ({pair}) of arrays of shape {shape}, "
                                f"got {type(state).__name__}")
            parts = state
        arrays = []
        for index, (part_name, part) in enumerate(zip(self.state_names, parts)):
            label = name if len(parts) == 1 else f"{name}[{index}] ({part_name})"
            if part is None:
                arrays.append(np.zeros((batch, self.hidden_size), self.dtype))
            else:
                array = float_array(label, part, self.dtype, shape, copy)
                arrays.append(array.reshape(batch, self.hidden_size))
        return tuple(arrays)

    def _pack_state(self, arrays, unbatched):
        if unbatched:
            arrays = [array.reshape(self.hidden_size) for array in arrays]
        return arrays[0] if len(arrays) == 1 else tuple(arrays)


@_documented
class LSTMCell(RecurrentCell):
    """One LSTM step (gate rows i, f, g, o), as torch.nn.LSTMCell; state (h, c).

    Parameters
    ----------
    %(size_parameters)s
    bias : bool, default True
        With `bias_ih` and `bias_hh` (4·H,).
    peephole : bool, default False
        Peephole connections (Gers & Schmidhuber 2000), `weight_peephole` (3, H); see docs/math.md.
    forget_gate : bool, default True
        False: the cell of Hochreiter & Schmidhuber 1997, gate rows i, g, o (3·H rows),
        c' = c + i ⊙ g; with peepholes, `weight_peephole` is (2, H).
    %(common_parameters)s
    recurrent_init : {"uniform", "orthogonal"}, default "uniform"
        "orthogonal": each gate's (H, H) block of every ``weight_hh`` a random orthogonal matrix
        (gain 1), drawn after the other parameters (docs/layers.md §1).
    forget_bias : float, default 0.0
        Added to the forget gate's rows of ``bias_ih`` after the draw (Keras's unit_forget_bias
        habit); needs the forget gate and bias=True.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, peephole: bool = False,
                 forget_gate: bool = True, dtype: DTypeLike = np.float32, backend: str = "auto",
                 seed: Seed = None, recurrent_init: str = "uniform", forget_bias: float = 0.0) -> None:
        self.forget_gate = flag("forget_gate", forget_gate)
        self.cell = "lstm" if self.forget_gate else "lstm_nf"
        super().__init__(input_size, hidden_size, bias, peephole=peephole, dtype=dtype,
                         backend=backend, seed=seed, recurrent_init=recurrent_init,
                         forget_bias=forget_bias)
        self._fix_attributes("forget_gate")


@_documented
class GRUCell(RecurrentCell):
    """One GRU step (gate rows r, z, n), as torch.nn.GRUCell; state h.

    h' = (1 - z) ⊙ n + z ⊙ h. `reset_after=True` (torch's and cuDNN's form) applies r to
    W_hn h + b_hn; False applies it to h before the product (Cho et al. 2014).

    Parameters
    ----------
    %(size_parameters)s
    bias : bool, default True
        With `bias_ih` and `bias_hh` (3·H,).
    reset_after : bool, default True
        Where the reset gate applies, as above.
    %(common_parameters)s
    recurrent_init : {"uniform", "orthogonal"}, default "uniform"
        "orthogonal": each gate's (H, H) block of every ``weight_hh`` a random orthogonal matrix
        (gain 1), drawn after the other parameters (docs/layers.md §1).
    """

    cell = "gru"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, reset_after: bool = True,
                 dtype: DTypeLike = np.float32, backend: str = "auto", seed: Seed = None,
                 recurrent_init: str = "uniform") -> None:
        super().__init__(input_size, hidden_size, bias, dtype=dtype, backend=backend, seed=seed,
                         recurrent_init=recurrent_init, reset_after=reset_after)


@_documented
class RNNCell(RecurrentCell):
    """One Elman step, h' = act(W_ih x + b_ih + W_hh h + b_hh), as torch.nn.RNNCell; state h.

    Parameters
    ----------
    %(size_parameters)s
    bias : bool, default True
        With `bias_ih` and `bias_hh` (H,).
    nonlinearity : "tanh" or "relu", default "tanh"
        The activation act.
    %(common_parameters)s
    recurrent_init : {"uniform", "orthogonal"}, default "uniform"
        "orthogonal": each gate's (H, H) block of every ``weight_hh`` a random orthogonal matrix
        (gain 1), drawn after the other parameters (docs/layers.md §1).
    """

    cell = "rnn"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, nonlinearity: str = "tanh",
                 dtype: DTypeLike = np.float32, backend: str = "auto", seed: Seed = None,
                 recurrent_init: str = "uniform") -> None:
        super().__init__(input_size, hidden_size, bias, dtype=dtype, backend=backend, seed=seed,
                         recurrent_init=recurrent_init, nonlinearity=nonlinearity)
