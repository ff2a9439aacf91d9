"""Optimizers with torch.optim's update rules, over dicts of NumPy arrays (SPEC §5).

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
"""
import math
import numbers

import numpy as np

__all__ = ["SGD", "Adagrad", "Adam", "merge"]


def merge(**named):
    """One dict from several name -> array dicts, each key prefixed with its group's name and a dot.

    merge(rnn={"weight_ih_l0": a}, head={"weight": b}) == {"rnn.weight_ih_l0": a, "head.weight": b};
    the arrays are not copied.
    """
    merged = {}
    for prefix, arrays in named.items():
        for name, array in arrays.items():
            key = f"{prefix}.{name}"
            if key in merged:
                raise ValueError(f"merge: key {key!r} occurs twice")
            merged[key] = array
    return merged


def _hyperparameter(name, value, low=0.0, high=None):
    """`value` as a float with low <= value (< high), else TypeError/ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not (value >= low and (high is None or value < high)):
        interval = f"[{low}, {high})" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {interval}, got {value}")
    return value


class Optimizer:
    """Shared by the optimizers: argument checks, per-name state and its (de)serialisation.

    Subclasses define `buffers` (names of the float arrays kept per parameter, each shaped like
    the parameter), whether they count steps (`counts_steps`), and `_update`.
    """

    buffers = ()
    counts_steps = False

    def __init__(self, lr, weight_decay):
        self.lr = _hyperparameter("lr", lr)
        self.weight_decay = _hyperparameter("weight_decay", weight_decay)
        # name -> {"step": int (when counted), buffer name -> array like the parameter}
        self.state = {}

    def step(self, params, grads):
        """Update every array of `params` in place from `grads[name]` (same keys and shapes)."""
        checked = self._check(params, grads)
        for name, (param, grad) in checked.items():
            state = self.state.get(name)
            if state is None:
                state = self.state[name] = {buffer: np.zeros_like(param) for buffer in self.buffers}
                if self.counts_steps:
                    state["step"] = 0
            if self.counts_steps:
                state["step"] += 1
            if self.weight_decay:
                grad = grad + self.weight_decay * param
            self._update(param, grad, state)

    def _check(self, params, grads):
        """name -> (param, grad as param's dtype), after checking every entry."""
        missing = [name for name in params if name not in grads]
        if missing:
            raise KeyError(f"grads has no entry for parameter {missing[0]!r}")
        unexpected = [name for name in grads if name not in params]
        if unexpected:
            raise KeyError(f"grads has entry {unexpected[0]!r} that is not in params")
        checked = {}
        for name, param in params.items():
            if not isinstance(param, np.ndarray) or param.dtype.kind != "f":
                kind = param.dtype if isinstance(param, np.ndarray) else type(param).__name__
                raise TypeError(f"params[{name!r}] must be a float numpy array to update in place, got {kind}")
            if not param.flags.writeable:
                raise ValueError(f"params[{name!r}] is read-only and cannot be updated in place")
            grad = np.asarray(grads[name])
            if grad.dtype.kind != "f":
                raise TypeError(f"grads[{name!r}] must be a float array, got dtype {grad.dtype}")
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
            checked[name] = (param, grad.astype(param.dtype, copy=False))
        return checked

    def state_dict(self):
        """The state as a flat dict of array copies: "name/buffer" -> array, "name/step" -> int64 0-d."""
        flat = {}
        for name, state in self.state.items():
            for buffer, value in state.items():
                dtype = np.int64 if buffer == "step" else value.dtype
                flat[f"{name}/{buffer}"] = np.array(value, dtype=dtype)
        return flat

    def load_state_dict(self, state_dict):
        """Replace the state with copies from a dict made by `state_dict` (e.g. read back from .npz).

        Raises KeyError naming an entry this optimizer does not know or a missing one and
        TypeError/ValueError for a non-float buffer or a step that is not a non-negative integer;
        nothing changes when any entry is wrong. Buffer shapes are checked against the parameters
        at the next `step`.
        """
        expected = self.buffers + (("step",) if self.counts_steps else ())
        state = {}
        for key, value in state_dict.items():
            name, _, buffer = key.rpartition("/")
            if not name or buffer not in expected:
                raise KeyError(
                    f"state_dict has unexpected key {key!r} (expected 'name/buffer', buffer in {expected})"
                )
            value = np.asarray(value)
            if buffer == "step":
                if value.shape != () or value.dtype.kind not in "iu" or value < 0:
                    raise ValueError(f"state_dict[{key!r}] must be a non-negative integer, got {value!r}")
                state.setdefault(name, {})[buffer] = int(value)
            else:
                if value.dtype.kind != "f":
                    raise TypeError(f"state_dict[{key!r}] must be a float array, got dtype {value.dtype}")
                state.setdefault(name, {})[buffer] = value.copy()
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
    """

    def __init__(self, lr, momentum=0.0, *, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.momentum = _hyperparameter("momentum", momentum)
        self.buffers = ("momentum_buffer",) if self.momentum else ()

    def _update(self, param, grad, state):
        if self.momentum:
            # The buffer starts at zero, so the first step leaves exactly buf = g, as torch's does.
            buf = state["momentum_buffer"]
            buf *= self.momentum
            buf += grad
            grad = buf
        param -= self.lr * grad

    def __repr__(self):
        return f"SGD(lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay})"


class Adagrad(Optimizer):
    """torch.optim.Adagrad (no lr decay, initial accumulator 0).

    sum += g * g; p -= lr * g / (sqrt(sum) + eps).
    """

    buffers = ("sum",)

    def __init__(self, lr, eps=1e-10, *, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.eps = _hyperparameter("eps", eps)

    def _update(self, param, grad, state):
        state_sum = state["sum"]
        state_sum += grad * grad
        param -= self.lr * (grad / (np.sqrt(state_sum) + self.eps))

    def __repr__(self):
        return f"Adagrad(lr={self.lr}, eps={self.eps}, weight_decay={self.weight_decay})"


class Adam(Optimizer):
    """torch.optim.Adam (bias-corrected, not AMSGrad; weight_decay is L2 added to g, not AdamW).

    m = beta1 m + (1 - beta1) g; v = beta2 v + (1 - beta2) g * g; at step t
    p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps).
    """

    buffers = ("exp_avg", "exp_avg_sq")
    counts_steps = True

    def __init__(self, lr, betas=(0.9, 0.999), eps=1e-8, *, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = tuple(_hyperparameter(f"betas[{k}]", betas[k], high=1.0) for k in range(2))
        self.eps = _hyperparameter("eps", eps)

    def _update(self, param, grad, state):
        beta1, beta2 = self.betas
        step = state["step"]
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg *= beta1
        exp_avg += (1 - beta1) * grad
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * grad * grad
        # Python floats, so float32 arrays stay float32 (NumPy scalars would promote them).
        step_size = self.lr / (1 - beta1**step)
        denom = np.sqrt(exp_avg_sq) / math.sqrt(1 - beta2**step) + self.eps
        param -= step_size * (exp_avg / denom)

    def __repr__(self):
        return f"Adam(lr={self.lr}, betas={self.betas}, eps={self.eps}, weight_decay={self.weight_decay})"
