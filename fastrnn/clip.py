"""Gradient clipping by global norm, as torch.nn.utils.clip_grad_norm_ does it."""
import math
import numbers

import numpy as np

__all__ = ["clip_grad_norm"]


def clip_grad_norm(grads, max_norm):
    """Scale every array of `grads` in place so that their global 2-norm is at most `max_norm`.

    norm = sqrt(sum over arrays of sum(g**2)), computed in float64. When
    max_norm / (norm + 1e-6) < 1 every array is multiplied by that factor (torch's formula);
    otherwise nothing changes. Returns the norm before clipping, a float. A non-finite norm
    (an inf or NaN gradient) is returned as is and the gradients are left untouched, so the
    caller can detect it and skip the step.
    """
    if isinstance(max_norm, bool) or not isinstance(max_norm, numbers.Real):
        raise TypeError(f"max_norm must be a real number, got {type(max_norm).__name__}")
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")
    for name, grad in grads.items():
        if not isinstance(grad, np.ndarray) or grad.dtype.kind != "f":
            kind = grad.dtype if isinstance(grad, np.ndarray) else type(grad).__name__
            raise TypeError(f"grads[{name!r}] must be a float numpy array (scaled in place), got {kind}")
    sum_squares = sum(float(np.sum(np.square(grad, dtype=np.float64))) for grad in grads.values())
    norm = math.sqrt(sum_squares)
    clip_coef = float(max_norm) / (norm + 1e-6)
    if math.isfinite(norm) and clip_coef < 1.0:
        for grad in grads.values():
            grad *= clip_coef
    return norm
