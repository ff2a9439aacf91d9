"""The few helpers all three reference cells use: σ, the order of the steps, the padding mask."""
import numpy as np
from scipy.special import expit as sigmoid  # σ(a) = 1 / (1 + exp(-a)), no overflow warning for large |a|

__all__ = ["sigmoid", "time_steps", "valid_steps", "or_zeros"]


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
