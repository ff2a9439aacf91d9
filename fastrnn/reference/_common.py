"""The few helpers the reference cells share: σ, the order of the steps, the padding mask, and the
gradients through the affine map of the inputs and the previous state."""
import numpy as np
from scipy.special import expit as sigmoid  # σ(a) = 1 / (1 + exp(-a)), no overflow warning for large |a|

__all__ = ["sigmoid", "time_steps", "valid_steps", "or_zeros", "affine_backward"]


def time_steps(T, reverse):
    """The steps in the order forward visits them; backward walks `reversed(time_steps(...))`."""
    return range(T - 1, -1, -1) if reverse else range(T)


def valid_steps(lengths, T, B):
    """(T, B, 1) bool, True where step t is part of sequence b (t < lengths[b])."""
    if lengths is None:
        return np.ones((T, B, 1), dtype=bool)
    return (np.arange(T)[:, None] < lengths[None, :])[:, :, None]


def or_zeros(param, shape, dtype):
    """`param`, or zeros when the layer has none (bias=False, no peepholes): the term drops out."""
    return np.zeros(shape, dtype) if param is None else param


def affine_backward(da, x, hs_prev, w_ih, grads):
    """Back through a = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh for all steps at once, given
    da = dL/da (T, B, G*H): adds the gradients of W_ih, W_hh and the biases (when present) into
    `grads`, returns dL/dx (T, B, D). (The path through h_{t-1} is the time loop's.)"""
    T, B, D = x.shape
    da = da.reshape(T * B, -1)
    grads["w_ih"] += da.T @ x.reshape(T * B, D)                        # a = W_ih x_t + ...
    grads["w_hh"] += da.T @ hs_prev.reshape(T * B, hs_prev.shape[2])   # a = ... + W_hh h_{t-1} + ...
    for name in ("b_ih", "b_hh"):
        if grads[name] is not None:
            grads[name] += da.sum(axis=0)                              # a = ... + b_ih + b_hh
    return (da @ w_ih).reshape(T, B, D)                                # a = W_ih x_t + ...
