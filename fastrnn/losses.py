"""Losses returning (loss, gradient with respect to the prediction), ready for `backward`.

The loss is a Python float (summed in float64); the gradient is a fresh array of the
prediction's dtype.
"""
import numbers

import numpy as np

from fastrnn._checks import float_array
from fastrnn.modules import integer_array

__all__ = ["softmax_cross_entropy", "mse"]


def softmax_cross_entropy(logits, targets, ignore_index=None):
    """Mean of -log softmax(logits[n])[targets[n]] over the rows n whose target is not ignored.

    logits: (N, C) float array. targets: (N,) integers in [0, C), or equal to `ignore_index`.
    Returns (loss, dlogits) with dlogits (N, C) of logits' dtype; ignored rows get zero gradient.
    Matches torch.nn.functional.cross_entropy(reduction="mean") except when every target is
    ignored (or N == 0): the loss is then 0.0 with a zero gradient instead of NaN, so a batch of
    pure padding contributes nothing rather than poisoning training.
    Stable for large logits: each row is shifted by its maximum before exponentiating.
    """
    logits = float_array("logits", logits, None)
    if logits.ndim != 2 or logits.shape[1] == 0:
        raise ValueError(f"logits must have shape (N, C) with C >= 1, got {logits.shape}")
    targets = integer_array("targets", targets)
    num_rows, num_classes = logits.shape
    if targets.shape != (num_rows,):
        raise ValueError(
            f"targets must have shape ({num_rows},) to match logits {logits.shape}, got {targets.shape}"
        )
    integer_index = isinstance(ignore_index, numbers.Integral) and not isinstance(ignore_index, bool)
    if ignore_index is not None and not integer_index:
        raise TypeError(f"ignore_index must be an int or None, got {type(ignore_index).__name__}")

    kept = np.ones(num_rows, dtype=bool) if ignore_index is None else targets != ignore_index
    rows = np.flatnonzero(kept)
    kept_targets = targets[rows]
    out_of_range = (kept_targets < 0) | (kept_targets >= num_classes)
    if out_of_range.any():
        raise ValueError(
            f"targets must be in [0, {num_classes}) or equal ignore_index={ignore_index}, "
            f"got {kept_targets[out_of_range][0]}"
        )

    dlogits = np.zeros_like(logits)
    if rows.size == 0:
        return 0.0, dlogits
    shifted = logits[rows] - logits[rows].max(axis=1, keepdims=True)
    exp_shifted = np.exp(shifted)
    sum_exp = exp_shifted.sum(axis=1)
    # log softmax at the target = shifted target logit - log sum exp of the shifted row
    target_log_probs = shifted[np.arange(rows.size), kept_targets] - np.log(sum_exp)
    loss = -float(np.sum(target_log_probs, dtype=np.float64)) / rows.size
    # d loss / d logits = (softmax - one_hot(target)) / number of kept rows
    probs = exp_shifted / sum_exp[:, None]
    probs[np.arange(rows.size), kept_targets] -= 1
    dlogits[rows] = probs / rows.size
    return loss, dlogits


def mse(pred, target):
    """Mean over all elements of (pred - target)**2; returns (loss, dpred).

    pred: float array of any shape; target: numeric array of the same shape (converted to
    pred's dtype). dpred = 2 (pred - target) / pred.size, of pred's dtype. An empty pred gives
    loss 0.0 (torch gives NaN).
    """
    pred = float_array("pred", pred, None)
    target = np.asarray(target)
    if not (np.issubdtype(target.dtype, np.floating) or np.issubdtype(target.dtype, np.integer)):
        raise TypeError(f"target must be a numeric array, got dtype {target.dtype}")
    if target.shape != pred.shape:
        raise ValueError(f"target must have the shape of pred {pred.shape}, got {target.shape}")
    if pred.size == 0:
        return 0.0, np.zeros_like(pred)
    diff = pred - target.astype(pred.dtype, copy=False)
    loss = float(np.sum(np.square(diff, dtype=np.float64))) / pred.size
    return loss, diff * (2.0 / pred.size)
