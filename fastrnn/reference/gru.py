"""GRU cell in plain NumPy, docs/math.md §6 (gate rows in order r, z, n):

    r   = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
    z   = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
    n   = tanh(W_in x_t + b_in + r ⊙ (W_hn h_{t-1} + b_hn))    reset_after=True (PyTorch)
    n   = tanh(W_in x_t + b_in + W_hn (r ⊙ h_{t-1}) + b_hn)    reset_after=False (Cho et al. 2014)
    h_t = (1 − z) ⊙ n + z ⊙ h_{t-1}

`forward` and `backward` follow the cell contract in fastrnn/_backends.py. "t-1" is the step
processed before t: t+1 when reverse=True. A step past a sequence's length (lengths[b]) keeps h
unchanged and outputs zero.
"""
import numpy as np

from ._common import or_zeros, sigmoid, time_steps, valid_steps


def forward(x, state0, params, lengths, reverse, reset_after=True, keep=True):
    T, B, D = x.shape
    (h,) = state0
    H = h.shape[1]
    w_ih, w_hh = params["w_ih"], params["w_hh"]
    b_ih, b_hh = or_zeros(params["b_ih"], 3 * H, x.dtype), or_zeros(params["b_hh"], 3 * H, x.dtype)
    w_hn, b_hn = w_hh[2 * H:], b_hh[2 * H:]
    # reset_after=False multiplies W_hn by r ⊙ h_{t-1}, not h_{t-1}: the step's product skips those rows
    rows = 3 * H if reset_after else 2 * H
    valid = valid_steps(lengths, T, B)
    x = np.where(valid, x, 0)  # padding must not matter whatever it holds (NaN, inf)

    # W_i* x_t + b_i*, the part that does not depend on h_{t-1}: all steps in one product
    a_x = (x.reshape(T * B, D) @ w_ih.T + b_ih).reshape(T, B, 3 * H)
    y = np.zeros((T, B, H), x.dtype)
    hs_prev = np.empty((T, B, H), x.dtype)      # h_{t-1} of every step, for backward
    gates = np.empty((T, 3, B, H), x.dtype)     # r, z, n
    a_hn = np.empty((T, B, H), x.dtype) if reset_after else None  # W_hn h_{t-1} + b_hn, which dr needs
    for t in time_steps(T, reverse):
        hs_prev[t] = h
        a_h = h @ w_hh[:rows].T + b_hh[:rows]               # W_h* h_{t-1} + b_h*, rows r, z (, n)
        r = sigmoid(a_x[t, :, :H] + a_h[:, :H])             # r = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
        z = sigmoid(a_x[t, :, H:2 * H] + a_h[:, H:2 * H])   # z = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
        if reset_after:
            # n = tanh(W_in x_t + b_in + r ⊙ (W_hn h_{t-1} + b_hn))
            a_hn[t] = a_h[:, 2 * H:]
            n = np.tanh(a_x[t, :, 2 * H:] + r * a_hn[t])
        else:
            # n = tanh(W_in x_t + b_in + W_hn (r ⊙ h_{t-1}) + b_hn)
            n = np.tanh(a_x[t, :, 2 * H:] + (r * h) @ w_hn.T + b_hn)
        h_t = (1 - z) * n + z * h                           # h_t = (1 − z) ⊙ n + z ⊙ h_{t-1}
        gates[t] = r, z, n
        y[t] = np.where(valid[t], h_t, 0)                   # padded steps output zero...
        h = np.where(valid[t], h_t, h)                      # ...and keep their state
    cache = (x, valid, hs_prev, gates, a_hn, w_ih, w_hh, reset_after, reverse)
    return y, (h,), cache if keep else None


def backward(dy, dstate_n, cache, grads, norms=None):
    x, valid, hs_prev, gates, a_hn, w_ih, w_hh, reset_after, reverse = cache
    T, B, D = x.shape
    H = hs_prev.shape[2]
    w_hrz, w_hn = w_hh[:2 * H], w_hh[2 * H:]
    (dh_next,) = dstate_n

    da_x = np.empty((T, B, 3 * H), x.dtype)  # dL/d(W_i* x_t + b_i*), rows r, z, n, at every step
    da_h = np.empty((T, B, 3 * H), x.dtype)  # dL/d(W_h* · + b_h*): the recurrent terms, rows r, z, n
    for t in reversed(time_steps(T, reverse)):
        r, z, n = gates[t]
        h_prev = hs_prev[t]
        dh = np.where(valid[t], dy[t] + dh_next, 0)   # h_t feeds y[t] and step t+1; padded: neither
        if norms is not None:
            norms[0, t] = np.linalg.norm(dh)      # dh: the whole dL/dh_t
        dn = dh * (1 - z)                             # h_t = (1 − z) ⊙ n + z ⊙ h_{t-1}
        dz = dh * (h_prev - n)                        # h_t = (1 − z) ⊙ n + z ⊙ h_{t-1}
        dh_prev = dh * z                              # h_t = (1 − z) ⊙ n + z ⊙ h_{t-1}
        da_n = dn * (1 - n * n)                       # n = tanh(a_n)
        if reset_after:
            dr = da_n * a_hn[t]                       # a_n = W_in x_t + b_in + r ⊙ (W_hn h_{t-1} + b_hn)
            da_hn = da_n * r                          # a_n = W_in x_t + b_in + r ⊙ (W_hn h_{t-1} + b_hn)
        else:
            drh = da_n @ w_hn                         # a_n = W_in x_t + b_in + W_hn (r ⊙ h_{t-1}) + b_hn
            dr = drh * h_prev                         # r ⊙ h_{t-1}
            dh_prev += drh * r                        # r ⊙ h_{t-1}
            da_hn = da_n                              # a_n = ... + W_hn (r ⊙ h_{t-1}) + b_hn
        da_z = dz * z * (1 - z)                       # z = σ(a_z)
        da_r = dr * r * (1 - r)                       # r = σ(a_r)
        # padded: 0 whatever the gates hold
        da_x[t] = np.where(valid[t], np.concatenate((da_r, da_z, da_n), axis=1), 0)
        da_h[t] = np.where(valid[t], np.concatenate((da_r, da_z, da_hn), axis=1), 0)
        if reset_after:
            dh_prev += da_h[t] @ w_hh                 # W_hr h_{t-1}, W_hz h_{t-1}, W_hn h_{t-1}
        else:
            dh_prev += da_h[t, :, :2 * H] @ w_hrz     # W_hr h_{t-1}, W_hz h_{t-1}
        dh_next = np.where(valid[t], dh_prev, dh_next)       # padded: h_t = h_{t-1}

    # The input terms W_i* x_t + b_i*, differentiated for all steps at once
    grads["w_ih"] += da_x.reshape(T * B, 3 * H).T @ x.reshape(T * B, D)
    if grads["b_ih"] is not None:
        grads["b_ih"] += da_x.sum(axis=(0, 1))
    dx = (da_x.reshape(T * B, 3 * H) @ w_ih).reshape(T, B, D)
    # The recurrent terms W_h* h_{t-1} + b_h*, except W_hn (r ⊙ h_{t-1}) when reset_after=False
    if reset_after:
        grads["w_hh"] += da_h.reshape(T * B, 3 * H).T @ hs_prev.reshape(T * B, H)
    else:
        rh = np.where(valid, gates[:, 0] * hs_prev, 0)  # r ⊙ h_{t-1} (0 on padded steps)
        grads["w_hh"][:2 * H] += da_h[:, :, :2 * H].reshape(T * B, 2 * H).T @ hs_prev.reshape(T * B, H)
        grads["w_hh"][2 * H:] += da_h[:, :, 2 * H:].reshape(T * B, H).T @ rh.reshape(T * B, H)
    if grads["b_hh"] is not None:
        grads["b_hh"] += da_h.sum(axis=(0, 1))
    return dx, (dh_next,)  # dh_next is now dL/dh_0


def gate_activations(cache):
    """The activated gates of the forward that made `cache`: (T, G, B, H), gates in the order r, z, n
    (the contract in fastrnn/_backends.py)."""
    return cache[3].copy()
