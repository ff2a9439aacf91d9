"""Optimizers with torch.optim's update rules, over dicts of NumPy arrays (docs/toolkit.md §5).

`step(params, grads)` updates every array of `params` in place (same object, same dtype) from
the gradient of the same name. The optimizer's state (momentum buffers, running averages) is
keyed by parameter name, so one optimizer serves a model made of several modules when their
dicts are merged under distinct prefixes; `merge` does that:

    params = optim.merge(embed=embedding.params, rnn=lstm.params, head=linear.params)
    grads = optim.merge(embed=embedding.grads, rnn=lstm.grads, head=linear.grads)
    optimizer = optim.Adam(lr=2e-3)
    ...
    optimizer.step(params, grads)

The merged dicts hold the modules' own arrays, so they stay valid across steps as long as the
modules update and zero them in place (as fastrnn's layers do).

`state_dict()` is a flat dict of plain arrays (saveable with numpy.savez and loadable without
pickle); the hyperparameters are not in it: build the optimizer with the same ones.

Hyperparameters must be finite numbers in range (a ValueError names the one that is not).
`step` checks every parameter and gradient before it writes anything, and updates in place
with preallocated scratch space, slice by slice, so no update allocates arrays of the
parameters' size.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Dict, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from ._checks import in_place_float_array, real_number

__all__ = ["SGD", "Adagrad", "Adam", "merge"]

# Updates run over slices of this many elements, so that a parameter, its gradient, its state
# and the scratch space stay in cache across the several passes of one update.
CHUNK = 1 << 15


def merge(**named: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """One dict from several name -> array dicts, each key prefixed with its group's name and a dot.

    merge(rnn={"weight_ih_l0": a}, head={"weight": b}) == {"rnn.weight_ih_l0": a, "head.weight": b};
    the arrays are not copied.

    Parameters
    ----------
    **named : dict of str -> numpy.ndarray
        One dict per group, under the group's name.

    Returns
    -------
    dict of str -> numpy.ndarray
        The same array objects under "group.name" keys.
    """
    merged = {}
    for prefix, arrays in named.items():
        for name, array in arrays.items():
            key = f"{prefix}.{name}"
            if key in merged:
                raise ValueError(f"merge: key {key!r} occurs twice")
            merged[key] = array
    return merged


def _slices(param, grad, buffers, scratch):
    """(param, grad, buffers, scratch) pieces to update one after the other, all of param's shape or flat.

    A C-contiguous parameter is cut into flat slices of CHUNK elements (views: updating them
    updates it); any other layout is updated whole, through its own shape.
    """
    if not param.flags.c_contiguous:
        size = param.size
        yield param, grad, [buffer.reshape(param.shape) for buffer in buffers], [
            work[:size].reshape(param.shape) for work in scratch]
        return
    flat_param, flat_grad = param.reshape(-1), grad.reshape(-1)
    flat_buffers = [buffer.reshape(-1) for buffer in buffers]
    for start in range(0, param.size, CHUNK):
        stop = min(start + CHUNK, param.size)
        yield (flat_param[start:stop], flat_grad[start:stop], [buffer[start:stop] for buffer in flat_buffers],
               [work[:stop - start] for work in scratch])


class Optimizer:
    """Shared by the optimizers: argument checks, per-name state and its (de)serialisation.

    Subclasses define `buffers` (names of the float arrays kept per parameter, each shaped like
    the parameter and of its dtype), whether they count steps (`counts_steps`), and
    `_update(param, grad, buffers, step, scratch)`, which updates param and buffers in place
    using the two scratch arrays of param's size (all flat or all of param's shape).
    """

    buffers = ()
    counts_steps = False

    def __init__(self, lr: float, weight_decay: float) -> None:
        self.lr = real_number("lr", lr, low=0.0)
        self.weight_decay = real_number("weight_decay", weight_decay, low=0.0)
        # name -> {"step": int (when counted), buffer name -> array like the parameter}
        self.state = {}
        # dtype -> two 1-D work arrays, reused by every update (not part of the state)
        self._scratch = {}

    def step(self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray]) -> None:
        """Update every array of `params` in place from `grads[name]`.

        Parameters
        ----------
        params : dict of str -> numpy.ndarray
            Writeable float arrays, updated in place (same objects, same dtypes).
        grads : dict of str -> array_like
            The same keys, each a float array of its parameter's shape (converted to its dtype).

        Every entry is checked first (errors name the key, the expected and the actual shape or
        dtype); nothing is written unless all are valid.
        """
        checked = self._check(params, grads)
        for name, (param, grad) in checked.items():
            state = self.state.get(name)
            if state is None:
                state = self.state[name] = {buffer: np.zeros(param.shape, param.dtype) for buffer in self.buffers}
                if self.counts_steps:
                    state["step"] = 0
            if self.counts_steps:
                state["step"] += 1
            scratch = self._scratch_for(param)
            for piece in _slices(param, grad, [state[buffer] for buffer in self.buffers], scratch):
                param_piece, grad_piece, buffer_pieces, scratch_pieces = piece
                if self.weight_decay:
                    # g + weight_decay * p, as torch adds it, into the second scratch array.
                    decayed = scratch_pieces[1]
                    np.multiply(param_piece, self.weight_decay, out=decayed)
                    decayed += grad_piece
                    grad_piece = decayed
                self._update(param_piece, grad_piece, buffer_pieces, state.get("step"), scratch_pieces[0])

    def _scratch_for(self, param):
        """Two work arrays of param's dtype, of at least min(param.size, CHUNK) elements (or param.size)."""
        size = param.size if not param.flags.c_contiguous else min(param.size, CHUNK)
        scratch = self._scratch.get(param.dtype)
        if scratch is None or scratch.shape[1] < size:
            scratch = self._scratch[param.dtype] = np.empty((2, max(size, CHUNK)), param.dtype)
        return scratch

    def _check(self, params, grads):
        """name -> (param, grad as a C-contiguous array of param's dtype), after checking every entry."""
        for label, value in (("params", params), ("grads", grads)):
            if not isinstance(value, Mapping):
                raise TypeError(f"{label} must be a dict of name -> array, got {type(value).__name__}")
        missing = [name for name in params if name not in grads]
        if missing:
            raise KeyError(f"grads has no entry for parameter {missing[0]!r}")
        unexpected = [name for name in grads if name not in params]
        if unexpected:
            raise KeyError(f"grads has entry {unexpected[0]!r} that is not in params")
        checked = {}
        for name, param in params.items():
            in_place_float_array(f"params[{name!r}]", param)
            grad = np.asarray(grads[name])
            if grad.dtype.kind != "f":
                raise TypeError(f"grads[{name!r}] must be a float array (like params[{name!r}], {param.dtype}), "
                                f"got dtype {grad.dtype}")
            if grad.shape != param.shape:
                raise ValueError(
                    f"grads[{name!r}] must have shape {param.shape} like params[{name!r}], got {grad.shape}"
                )
            state = self.state.get(name)
            if state is not None and self.buffers and state[self.buffers[0]].shape != param.shape:
                raise ValueError(
                    f"params[{name!r}] has shape {param.shape} but the optimizer state for it has shape "
                    f"{state[self.buffers[0]].shape}"
                )
            checked[name] = (param, np.ascontiguousarray(grad, dtype=param.dtype))
        # State loaded from a file may be of another float dtype: the updates run in the parameter's.
        for name, (param, _) in checked.items():
            state = self.state.get(name, {})
            for buffer in self.buffers:
                if buffer in state and state[buffer].dtype != param.dtype:
                    state[buffer] = state[buffer].astype(param.dtype)
        return checked

    def state_dict(self) -> Dict[str, np.ndarray]:
        """The state as a flat dict of array copies.

        Returns
        -------
        dict of str -> numpy.ndarray
            "name/buffer" -> a copy of the buffer (the parameter's shape and dtype) and, for
            optimizers that count steps, "name/step" -> a 0-d int64 array.
        """
        flat = {}
        for name, state in self.state.items():
            for buffer, value in state.items():
                dtype = np.int64 if buffer == "step" else value.dtype
                flat[f"{name}/{buffer}"] = np.array(value, dtype=dtype)
        return flat

    def load_state_dict(self, state_dict: Mapping[str, ArrayLike],
                        params: Optional[Mapping[str, np.ndarray]] = None) -> None:
        """Replace the state with copies from a dict made by `state_dict` (e.g. read back from .npz).

        Parameters
        ----------
        state_dict : dict of str -> array_like
            "name/buffer" -> float array and, where steps are counted, "name/step" -> integer.
        params : dict of str -> numpy.ndarray, optional
            The parameters the state belongs to: when given, every name must be one of them and
            every buffer must have its parameter's shape. Without it, shapes are checked at the
            next `step`.

        Raises KeyError naming an entry this optimizer does not know or a missing one and
        TypeError/ValueError for a non-float buffer, a buffer of the wrong shape or a step that is
        not a non-negative integer; nothing changes when any entry is wrong.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a dict made by state_dict(), got {type(state_dict).__name__}")
        if params is not None and not isinstance(params, Mapping):
            raise TypeError(f"params must be a dict of name -> array, got {type(params).__name__}")
        expected = self.buffers + (("step",) if self.counts_steps else ())
        state = {}
        for key, value in state_dict.items():
            name, _, buffer = str(key).rpartition("/")
            if not name or buffer not in expected:
                raise KeyError(
                    f"state_dict has unexpected key {key!r} (expected 'name/buffer', buffer in {expected})"
                )
            if params is not None and name not in params:
                raise KeyError(f"state_dict has state for {name!r}, which is not in params")
            value = np.asarray(value)
            if buffer == "step":
                if value.shape != () or value.dtype.kind not in "iu" or value < 0:
                    raise ValueError(f"state_dict[{key!r}] must be a non-negative integer, got {value!r}")
                state.setdefault(name, {})[buffer] = int(value)
            else:
                if value.dtype.kind != "f":
                    raise TypeError(f"state_dict[{key!r}] must be a float array, got dtype {value.dtype}")
                if params is not None and value.shape != np.shape(params[name]):
                    raise ValueError(f"state_dict[{key!r}] must have shape {np.shape(params[name])} like "
                                     f"params[{name!r}], got {value.shape}")
                state.setdefault(name, {})[buffer] = np.array(value, order="C")
        for name, buffers in state.items():
            missing = [buffer for buffer in expected if buffer not in buffers]
            if missing:
                raise KeyError(f"state_dict is missing {name + '/' + missing[0]!r}")
            shapes = {buffers[buffer].shape for buffer in self.buffers}
            if len(shapes) > 1:
                raise ValueError(f"state_dict buffers of {name!r} have different shapes {sorted(shapes)}")
        self.state = state


class SGD(Optimizer):
    """torch.optim.SGD (dampening 0, no Nesterov).

    With momentum: buf = g on the first step, then buf = momentum * buf + g; p -= lr * buf.
    Without: p -= lr * g. weight_decay adds weight_decay * p to g first, as torch does.

    Parameters
    ----------
    lr : float
        Learning rate, finite and >= 0.
    momentum : float, default 0
        Finite and >= 0.
    weight_decay : float, default 0
        L2 penalty, finite and >= 0.
    """

    def __init__(self, lr: float, momentum: float = 0.0, *, weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)
        self.momentum = real_number("momentum", momentum, low=0.0)
        self.buffers = ("momentum_buffer",) if self.momentum else ()

    def _update(self, param, grad, buffers, step, work):
        if self.momentum:
            # The buffer starts at zero, so the first step leaves exactly buf = g, as torch's does.
            (buf,) = buffers
            buf *= self.momentum
            buf += grad
            grad = buf
        np.multiply(grad, self.lr, out=work)
        param -= work

    def __repr__(self):
        return f"SGD(lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay})"


class Adagrad(Optimizer):
    """torch.optim.Adagrad (no lr decay, initial accumulator 0).

    sum += g * g; p -= lr * g / (sqrt(sum) + eps).

    Parameters
    ----------
    lr : float
        Learning rate, finite and >= 0.
    eps : float, default 1e-10
        Finite and >= 0.
    weight_decay : float, default 0
        L2 penalty added to g, finite and >= 0.
    """

    buffers = ("sum",)

    def __init__(self, lr: float, eps: float = 1e-10, *, weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)
        self.eps = real_number("eps", eps, low=0.0)

    def _update(self, param, grad, buffers, step, work):
        (state_sum,) = buffers
        np.multiply(grad, grad, out=work)
        state_sum += work
        np.sqrt(state_sum, out=work)
        work += self.eps
        np.divide(grad, work, out=work)
        work *= self.lr
        param -= work

    def __repr__(self):
        return f"Adagrad(lr={self.lr}, eps={self.eps}, weight_decay={self.weight_decay})"


class Adam(Optimizer):
    """torch.optim.Adam (bias-corrected, not AMSGrad; weight_decay is L2 added to g, not AdamW).

    m = beta1 m + (1 - beta1) g; v = beta2 v + (1 - beta2) g * g; at step t
    p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps).

    Parameters
    ----------
    lr : float
        Learning rate, finite and >= 0.
    betas : (float, float), default (0.9, 0.999)
        Each in [0, 1).
    eps : float, default 1e-8
        Finite and >= 0.
    weight_decay : float, default 0
        L2 penalty added to g, finite and >= 0.
    """

    buffers = ("exp_avg", "exp_avg_sq")
    counts_steps = True

    def __init__(self, lr: float, betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, *,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = tuple(real_number(f"betas[{k}]", betas[k], low=0.0, high=1.0, high_open=True)
                           for k in range(2))
        self.eps = real_number("eps", eps, low=0.0)

    def _update(self, param, grad, buffers, step, work):
        beta1, beta2 = self.betas
        exp_avg, exp_avg_sq = buffers
        # m += (1 - beta1) (g - m): torch's lerp
        np.subtract(grad, exp_avg, out=work)
        work *= 1 - beta1
        exp_avg += work
        exp_avg_sq *= beta2
        np.multiply(grad, grad, out=work)
        work *= 1 - beta2
        exp_avg_sq += work
        # lr / c1 * m / (sqrt(v) / sqrt(c2) + eps) == (lr sqrt(c2) / c1) * m / (sqrt(v) + eps sqrt(c2)),
        # one pass fewer. Python floats, so float32 arrays stay float32.
        root_correction2 = math.sqrt(1 - beta2**step)
        np.sqrt(exp_avg_sq, out=work)
        work += self.eps * root_correction2
        np.divide(exp_avg, work, out=work)
        work *= self.lr * root_correction2 / (1 - beta1**step)
        param -= work

    def __repr__(self):
        return f"Adam(lr={self.lr}, betas={self.betas}, eps={self.eps}, weight_decay={self.weight_decay})"
