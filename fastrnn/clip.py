"""Gradient clipping in place, as torch.nn.utils.clip_grad_norm_ and clip_grad_value_ do it.

See docs/toolkit.md §6.

Both check every array first and only then write, so a bad entry leaves all of them unchanged.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ._checks import in_place_float_array, real_number

__all__ = ["clip_grad_norm", "clip_grad_value"]


def _checked_grads(grads):
    """The arrays of the dict `grads`, each a writeable float ndarray (errors name the key)."""
    if not isinstance(grads, Mapping):
        raise TypeError(f"grads must be a dict of name -> gradient array, got {type(grads).__name__}")
    return [in_place_float_array(f"grads[{name!r}]", grad) for name, grad in grads.items()]


def _sum_of_squares(array):
    """sum(array**2) as a float: a BLAS dot product in the array's dtype, float64 if that overflows."""
    flat = array.reshape(-1)
    if array.dtype in (np.float32, np.float64):
        total = float(np.dot(flat, flat))
        if math.isfinite(total):
            return total
    # float16 (no BLAS), or a float32 sum of squares past 3.4e38 that float64 still holds.
    return float(np.sum(np.square(flat, dtype=np.float64)))


def clip_grad_norm(grads: Mapping[str, np.ndarray], max_norm: float) -> float:
    """Scale the gradients in place so that their global 2-norm is at most `max_norm`.

    Parameters
    ----------
    grads : dict of str -> numpy.ndarray
        Writeable float arrays of any shapes and float dtypes, scaled in place.
    max_norm : float
        > 0; inf only measures the norm (nothing is scaled).

    Returns
    -------
    float
        The norm before clipping: sqrt of the sum over arrays of sum(g**2), each array's sum of
        squares accumulated in its own dtype (float64 for float16, and where float32 overflows),
        as torch does. When max_norm / (norm + 1e-6) < 1 every array is multiplied by that
        factor (torch's formula); otherwise nothing changes. A non-finite norm (an inf or NaN
        gradient) is returned as is and the gradients are left untouched, so the caller can
        detect it and skip the step.

    Every array is checked (a float ndarray, writeable; errors name the key) before any is scaled.
    """
    max_norm = real_number("max_norm", max_norm, low=0.0, low_open=True, allow_inf=True)
    arrays = _checked_grads(grads)
    with np.errstate(over="ignore"):  # an overflowing float32 sum is redone in float64
        norm = math.sqrt(sum(_sum_of_squares(grad) for grad in arrays))
    clip_coef = max_norm / (norm + 1e-6)
    if math.isfinite(norm) and clip_coef < 1.0:
        for grad in arrays:
            grad *= clip_coef
    return norm


def clip_grad_value(grads: Mapping[str, np.ndarray], clip_value: float) -> None:
    """Clamp every gradient element into [-clip_value, clip_value], in place (torch's ``clip_grad_value_``).

    Parameters
    ----------
    grads : dict of str -> numpy.ndarray
        Writeable float arrays of any shapes and float dtypes, clamped in place; NaN stays NaN.
    clip_value : float
        Finite and > 0.

    Returns
    -------
    None

    Every array is checked (a float ndarray, writeable; errors name the key) before any is clamped.
    """
    clip_value = real_number("clip_value", clip_value, low=0.0, low_open=True)
    for grad in _checked_grads(grads):
        np.clip(grad, -clip_value, clip_value, out=grad)
