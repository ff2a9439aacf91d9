"""Elman RNN cell in plain NumPy, docs/math.md §3:

    h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),    act = tanh (default) or relu

`forward` and `backward` follow the cell contract in fastrnn/_backends.py. "t-1" is the step
processed before t: t+1 when reverse=True. A step past a sequence's length (lengths[b]) keeps h
unchanged and outputs zero.
"""
import numpy as np

from ._common import affine_backward, or_zeros, time_steps, valid_steps

# act, and act' written in terms of act's output h = act(a)
ACTIVATIONS = {
    "tanh": (np.tanh, lambda h: 1 - h * h),
    "relu": (lambda a: np.maximum(a, 0), lambda h: h > 0),
}


def _activation(nonlinearity):
    if nonlinearity not in ACTIVATIONS:
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    return ACTIVATIONS[nonlinearity]


def forward(x, state0, params, lengths, reverse, nonlinearity="tanh", keep=True):
    act, _ = _activation(nonlinearity)
    T, B, D = x.shape
    (h,) = state0
    H = h.shape[1]
    w_ih, w_hh = params["w_ih"], params["w_hh"]
    b_ih, b_hh = or_zeros(params["b_ih"], H, x.dtype), or_zeros(params["b_hh"], H, x.dtype)
    valid = valid_steps(lengths, T, B)
    x = np.where(valid, x, 0)  # padding must not matter whatever it holds (NaN, inf)

    # W_ih x_t + b_ih + b_hh, the part that does not depend on h_{t-1}: all steps in one product
    a_x = (x.reshape(T * B, D) @ w_ih.T + b_ih + b_hh).reshape(T, B, H)
    y = np.zeros((T, B, H), x.dtype)
    hs_prev = np.empty((T, B, H), x.dtype)  # h_{t-1} of every step, for backward
    hs = np.empty((T, B, H), x.dtype)       # h_t of every step, for act'
    for t in time_steps(T, reverse):
        hs_prev[t] = h
        hs[t] = h_t = act(a_x[t] + h @ w_hh.T)   # h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
        y[t] = np.where(valid[t], h_t, 0)        # padded steps output zero...
        h = np.where(valid[t], h_t, h)           # ...and keep their state
    cache = (x, valid, hs_prev, hs, w_ih, w_hh, nonlinearity, reverse)
    return y, (h,), cache if keep else None


def backward(dy, dstate_n, cache, grads, norms=None):
    x, valid, hs_prev, hs, w_ih, w_hh, nonlinearity, reverse = cache
    _, act_grad = _activation(nonlinearity)
    T, B, D = x.shape
    H = hs.shape[2]
    (dh_next,) = dstate_n

    da = np.empty((T, B, H), x.dtype)  # dL/da, a = the argument of act, at every step
    for t in reversed(time_steps(T, reverse)):
        dh = np.where(valid[t], dy[t] + dh_next, 0)              # h_t feeds y[t] and step t+1; padded: neither
        if norms is not None:
            norms[0, t] = np.linalg.norm(dh)      # dh: the whole dL/dh_t
        da[t] = np.where(valid[t], dh * act_grad(hs[t]), 0)      # h_t = act(a); padded: 0 (even if hs[t] is NaN)
        dh_next = np.where(valid[t], da[t] @ w_hh, dh_next)  # a = ... W_hh h_{t-1}; padded: h_t = h_{t-1}

    # a = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh, differentiated for all steps at once
    dx = affine_backward(da, x, hs_prev, w_ih, grads)
    return dx, (dh_next,)  # dh_next is now dL/dh_0


def gate_activations(cache):
    """The activations h_t = act(...) of the forward that made `cache`: (T, 1, B, H) (the
    contract in fastrnn/_backends.py)."""
    return cache[3][:, None].copy()
