"""Central finite differences, for checking hand-written backward passes."""
import numpy as np


def numerical_gradient(loss, array, eps=1e-6):
    """d loss() / d array by central differences; `array` is perturbed in place and restored."""
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


def gradcheck(loss, arrays, analytic, eps=1e-6, rtol=1e-5, atol=1e-8):
    """Compare analytic gradients with central finite differences of a scalar `loss()`.

    arrays: dict name -> float64 array that loss() reads (perturbed in place and restored).
    analytic: dict name -> the gradient your backward computed for that array.
    Returns the largest absolute error; raises AssertionError naming the first array whose
    gradient differs by more than atol + rtol * |numerical|.
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
