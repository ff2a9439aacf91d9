"""Losses returning (loss, gradient with respect to the prediction), ready for `backward`, and softmax
(docs/toolkit.md §4).

The loss is a Python float; the gradient is a fresh array of the prediction's dtype. float16
predictions are computed in float32 (a float16 sum of 65,505 or more ones is already infinite)
and their gradient is rounded back to float16; float32 and float64 are computed in their own dtype.
"""
from __future__ import annotations

import math
import numbers

from typing import Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from fastrnn._checks import as_array, float_array, integer_array

__all__ = ["softmax_cross_entropy", "mse", "softmax", "perplexity"]

# exp(x) of every x in [-SAFE_RANGE, 0] is a normal number of the dtype (float32's smallest is
# about exp(-87.3), float64's exp(-708.4)), so a whole array within SAFE_RANGE of its maximum can be
# shifted by that one maximum instead of by the maximum of each row.
SAFE_RANGE = {np.dtype(np.float32): 80.0, np.dtype(np.float64): 700.0}


def compute_dtype(dtype):
    """The dtype a loss computes in for inputs of `dtype`: float16 -> float32, others unchanged."""
    return np.dtype(np.float32) if dtype.itemsize < 4 else dtype


def _shifted(x, axis, dtype, per_slice):
    """x - shift as a new array of `dtype`: its exp cannot overflow and sums of it keep precision.

    shift is the maximum of each slice along `axis` (keepdims), or, unless `per_slice`, the
    maximum of the whole array when every value is within SAFE_RANGE of it: one contiguous
    reduction and a scalar broadcast instead of a reduction per slice, with the largest term of
    each slice still at least exp(-SAFE_RANGE), a normal number.
    """
    shifted = np.empty(x.shape, dtype=dtype)
    top = None if per_slice else x.max()
    if top is not None and top - x.min() <= SAFE_RANGE.get(dtype, 0.0):  # False for NaN and infinities
        shift = dtype.type(top)
    else:
        shift = x.max(axis=axis, keepdims=True).astype(dtype, copy=False)
    np.subtract(x, shift, out=shifted, dtype=dtype)
    return shifted


def _row_sums(rows):
    """Sum of each row of a 2-D array, through a matrix-vector product (a BLAS call)."""
    return np.dot(rows, np.ones(rows.shape[1], dtype=rows.dtype))


def softmax(x: ArrayLike, axis: int = -1) -> np.ndarray:
    """exp(x) / sum(exp(x)) along `axis`, computed stably (shifted by the maximum).

    Parameters
    ----------
    x : array_like of float16, float32 or float64, any shape
        The scores.
    axis : int, default -1
        The axis along which the result sums to 1.

    Returns
    -------
    numpy.ndarray
        A new array of x's shape and dtype (float16 is computed in float32 and rounded back).
    """
    x = float_array("x", x, None)
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis must be an int, got {type(axis).__name__}")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis must be in [{-x.ndim}, {x.ndim}) for x of shape {x.shape}, got {axis}")
    if x.size == 0:
        return np.empty_like(x)
    probs = _shifted(x, int(axis), compute_dtype(x.dtype), per_slice=True)
    np.exp(probs, out=probs)
    probs /= probs.sum(axis=axis, keepdims=True)
    return probs.astype(x.dtype, copy=False)


def softmax_cross_entropy(logits: ArrayLike, targets: ArrayLike,
                          ignore_index: Optional[int] = None) -> Tuple[float, np.ndarray]:
    """Mean cross-entropy between softmax(logits) and the targets, and its gradient.

    Parameters
    ----------
    logits : array_like of float, shape (N, C)
        Unnormalised scores, C >= 1. float16 is computed in float32.
    targets : array_like, shape (N,) of integers or (N, C) of floats
        Class indices in [0, C) (or equal to `ignore_index`), or probabilities: row n is a
        distribution over the C classes. As torch.nn.functional.cross_entropy does, probability
        rows need not sum to 1 (the loss of row n is -sum_c targets[n, c] log softmax(logits[n])_c),
        but every entry must be finite and >= 0.
    ignore_index : int, optional
        With index targets only: rows whose target equals it do not count and get zero gradient.

    Returns
    -------
    loss : float
        Index targets: the mean of -log softmax(logits[n])[targets[n]] over the rows not ignored;
        probability targets: the mean over all N rows. 0.0 when no row counts (N == 0 or every
        target ignored), where torch gives NaN, so a batch of pure padding contributes nothing.
    dlogits : numpy.ndarray, shape (N, C), logits' dtype
        d loss / d logits: (softmax(logits[n]) sum_c targets[n, c] - targets[n]) / rows counted,
        with one-hot rows for index targets; zero for ignored rows.

    Stable for large logits (see `softmax`); matches torch's cross_entropy(reduction="mean").
    """
    logits = float_array("logits", logits, None)
    if logits.ndim != 2 or logits.shape[1] == 0:
        raise ValueError(f"logits must have shape (N, C) with C >= 1, got {logits.shape}")
    if ignore_index is not None and (isinstance(ignore_index, bool)
                                     or not isinstance(ignore_index, numbers.Integral)):
        raise TypeError(f"ignore_index must be an int or None, got {type(ignore_index).__name__}")
    targets = as_array("targets", targets)
    if targets.dtype.kind == "f" and targets.ndim == 2:
        if ignore_index is not None:
            raise ValueError("ignore_index applies to class-index targets only, not to probability targets "
                             f"of shape {targets.shape}")
        return _cross_entropy_probabilities(logits, targets)
    if targets.dtype.kind == "f":
        raise TypeError(f"targets must be class indices (integers, shape ({logits.shape[0]},)) or probabilities "
                        f"(floats, shape {logits.shape}), got dtype {targets.dtype} and shape {targets.shape}")
    return _cross_entropy_indices(logits, integer_array("targets", targets), ignore_index)


def _cross_entropy_indices(logits, targets, ignore_index):
    num_rows, num_classes = logits.shape
    if targets.shape != (num_rows,):
        raise ValueError(
            f"targets must have shape ({num_rows},) to match logits {logits.shape}, got {targets.shape}"
        )
    rows = None  # all rows count
    if ignore_index is not None:
        kept = targets != ignore_index
        if not kept.all():
            rows = np.flatnonzero(kept)
            targets = targets[rows]
    if targets.size:
        low, high = targets.min(), targets.max()
        if low < 0 or high >= num_classes:
            bad = low if low < 0 else high
            raise ValueError(f"targets must be in [0, {num_classes}) or equal ignore_index={ignore_index}, got {bad}")
    else:
        return 0.0, np.zeros_like(logits)
    counted = targets.size
    # Only the counted rows are computed: an ignored row may hold anything, even inf or NaN.
    scores = logits if rows is None else logits[rows]
    # One buffer: exp(shifted), then softmax / counted, then the gradient.
    grad = _shifted(scores, 1, compute_dtype(logits.dtype), per_slice=False)
    every_row = np.arange(counted)
    shifted_target_scores = grad[every_row, targets].astype(np.float64)
    np.exp(grad, out=grad)
    sum_exp = _row_sums(grad)
    # -log softmax at the target = log sum exp(shifted row) - shifted target score
    loss = float(np.sum(np.log(sum_exp, dtype=np.float64) - shifted_target_scores)) / counted
    grad *= (1.0 / (sum_exp * counted))[:, None]
    grad[every_row, targets] -= 1.0 / counted
    if rows is not None:
        full = np.zeros_like(logits)
        full[rows] = grad
        return loss, full
    return loss, grad.astype(logits.dtype, copy=False)


def _cross_entropy_probabilities(logits, targets):
    if targets.shape != logits.shape:
        raise ValueError(f"probability targets must have the shape of logits {logits.shape}, got {targets.shape}")
    num_rows = logits.shape[0]
    if num_rows == 0:
        return 0.0, np.zeros_like(logits)
    dtype = compute_dtype(logits.dtype)
    targets = np.ascontiguousarray(targets, dtype=dtype)
    smallest, largest = targets.min(), targets.max()
    if not (smallest >= 0 and np.isfinite(largest)):
        bad = smallest if not smallest >= 0 else largest
        raise ValueError(f"probability targets must be finite and >= 0, got {bad}")
    # Shifted by each row's maximum, both terms of the loss are sums of non-negative numbers.
    grad = _shifted(logits, 1, dtype, per_slice=True)
    weighted_shifted_scores = float(np.dot(targets.ravel(), grad.ravel()))
    np.exp(grad, out=grad)
    sum_exp = _row_sums(grad)
    target_mass = _row_sums(targets)
    # -sum_c t_c log softmax_c = (sum_c t_c) log sum exp(shifted) - sum_c t_c shifted_c
    loss = (float(np.dot(target_mass, np.log(sum_exp, dtype=np.float64))) - weighted_shifted_scores) / num_rows
    grad *= (target_mass / sum_exp)[:, None]
    grad -= targets
    grad *= 1.0 / num_rows
    return loss, grad.astype(logits.dtype, copy=False)


def perplexity(mean_nll: float) -> float:
    """exp(mean_nll): the perplexity of a mean negative log-likelihood (cross-entropy) in nats.

    Parameters
    ----------
    mean_nll : float
        A mean cross-entropy in nats, >= 0, such as the loss of `softmax_cross_entropy`
        (``perplexity(softmax_cross_entropy(logits, targets)[0])``). inf is allowed.

    Returns
    -------
    float
        exp(mean_nll); inf when that overflows a float.
    """
    if isinstance(mean_nll, bool) or not isinstance(mean_nll, numbers.Real):
        raise TypeError(f"mean_nll must be a real number, got {type(mean_nll).__name__}")
    if not mean_nll >= 0:
        raise ValueError(f"mean_nll must be a cross-entropy in nats, >= 0, got {mean_nll}")
    try:
        return math.exp(mean_nll)
    except OverflowError:
        return math.inf


def mse(pred: ArrayLike, target: ArrayLike) -> Tuple[float, np.ndarray]:
    """Mean over all elements of (pred - target)**2, and its gradient.

    Parameters
    ----------
    pred : array_like of float, any shape
    target : array_like of float or int, pred's shape

    Returns
    -------
    loss : float
        0.0 for an empty pred (torch gives NaN).
    dpred : numpy.ndarray, pred's shape and dtype
        2 (pred - target) / pred.size.
    """
    pred = float_array("pred", pred, None)
    target = np.asarray(target)
    if not (np.issubdtype(target.dtype, np.floating) or np.issubdtype(target.dtype, np.integer)):
        raise TypeError(f"target must be a numeric array, got dtype {target.dtype}")
    if target.shape != pred.shape:
        raise ValueError(f"target must have the shape of pred {pred.shape}, got {target.shape}")
    if pred.size == 0:
        return 0.0, np.zeros_like(pred)
    diff = np.subtract(pred, target, dtype=compute_dtype(pred.dtype))
    flat = diff.reshape(-1)
    loss = float(np.dot(flat, flat)) / pred.size
    diff *= 2.0 / pred.size
    return loss, diff.astype(pred.dtype, copy=False)
