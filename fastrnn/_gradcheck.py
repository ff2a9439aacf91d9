"""Central finite differences, for checking hand-written backward passes."""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
from numpy.typing import ArrayLike


def numerical_gradient(loss: Callable[[], float], array: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """d loss() / d array by central differences; `array` is perturbed in place and restored.

    Parameters
    ----------
    loss : callable
        Called without arguments, returns a float: the loss of the current value of `array`.
    array : numpy.ndarray of float64, C-contiguous
        The values `loss` reads; each element is moved by ±eps in place, then restored.
    eps : float, default 1e-6
        The step of the central differences.

    Returns
    -------
    numpy.ndarray, shaped as `array`, float64
        The numerical gradient (loss(a + eps) - loss(a - eps)) / (2 eps), element by element.
    """
    if array.dtype != np.float64:
        raise TypeError(f"array must be float64 for finite differences, got {array.dtype}")
    grad = np.zeros_like(array)
    flat, flat_grad = array.reshape(-1), grad.reshape(-1)
    if not np.shares_memory(flat, array):
        raise ValueError("array must be contiguous so it can be perturbed in place")
    for k in range(flat.size):
        saved = flat[k]
        flat[k] = saved + eps
        plus = loss()
        flat[k] = saved - eps
        minus = loss()
        flat[k] = saved
        flat_grad[k] = (plus - minus) / (2 * eps)
    return grad


def gradcheck(loss: Callable[[], float], arrays: Mapping[str, np.ndarray], analytic: Mapping[str, ArrayLike],
              eps: float = 1e-6, rtol: float = 1e-5, atol: float = 1e-8) -> float:
    """Compare analytic gradients with central finite differences of a scalar `loss()`.

    Parameters
    ----------
    loss : callable
        Called without arguments, returns a float computed from the arrays of `arrays`.
    arrays : mapping of str to numpy.ndarray of float64
        The arrays `loss` reads (perturbed in place and restored).
    analytic : mapping of str to array_like
        For each name of `arrays`, the gradient your backward computed, of that array's shape.
    eps : float, default 1e-6
        The step of the central differences.
    rtol, atol : float
        An element passes when its error is at most atol + rtol * abs(numerical).

    Returns
    -------
    float
        The largest absolute error over every array.

    Raises
    ------
    AssertionError
        Naming the first array whose gradient differs by more than the tolerance.
    """
    worst = 0.0
    for name, array in arrays.items():
        if name not in analytic:
            raise KeyError(f"analytic has no gradient for {name!r}")
        if np.shape(analytic[name]) != array.shape:
            raise ValueError(
                f"analytic[{name!r}] has shape {np.shape(analytic[name])}, expected {array.shape}"
            )
        numeric = numerical_gradient(loss, array, eps)
        error = np.abs(np.asarray(analytic[name]) - numeric)
        worst = max(worst, float(error.max(initial=0.0)))
        excess = error - (atol + rtol * np.abs(numeric))
        bad = excess > 0
        if bad.any():
            # Report the entry furthest beyond its tolerance, with plain ints and floats.
            k = tuple(int(i) for i in np.unravel_index(np.argmax(excess), array.shape))
            raise AssertionError(
                f"gradient of {name!r} differs from finite differences at index {k}: "
                f"analytic {float(np.asarray(analytic[name])[k])!r}, numerical {float(numeric[k])!r} "
                f"({int(bad.sum())} of {bad.size} entries beyond rtol={rtol}, atol={atol})"
            )
    return worst
