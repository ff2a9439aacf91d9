"""LSTM cell without forget gate (Hochreiter & Schmidhuber 1997) in plain NumPy, see docs/math.md
(gate rows in order i, g, o):

    i   = σ(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi [+ p_i ⊙ c_{t-1}])
    g   = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)
    c_t = c_{t-1} + i ⊙ g
    o   = σ(W_io x_t + b_io + W_ho h_{t-1} + b_ho [+ p_o ⊙ c_t])
    r_t = o ⊙ tanh(c_t)
    h_t = W_hr r_t              (with a projection, params["w_hr"] (P, H) not None; else h_t = r_t)

The bracketed peephole terms are there when params["w_peep"] (rows p_i, p_o) is not None.
`forward` and `backward` follow the cell contract in fastrnn/_backends.py. "t-1" is the step
processed before t: t+1 when reverse=True. A step past a sequence's length (lengths[b]) keeps
(h, c) unchanged and outputs zero.
"""
import numpy as np

from ._common import affine_backward, or_zeros, sigmoid, time_steps, valid_steps


def forward(x, state0, params, lengths, reverse, keep=True):
    T, B, D = x.shape
    h, c = state0
    H, P = c.shape[1], h.shape[1]  # P: the size of h, H without a projection
    w_ih, w_hh, w_hr = params["w_ih"], params["w_hh"], params.get("w_hr")
    b_ih, b_hh = or_zeros(params["b_ih"], 3 * H, x.dtype), or_zeros(params["b_hh"], 3 * H, x.dtype)
    p_i, p_o = or_zeros(params["w_peep"], (2, H), x.dtype)
    valid = valid_steps(lengths, T, B)
    x = np.where(valid, x, 0)  # padding must not matter whatever it holds (NaN, inf)

    # W_i* x_t + b_i* + b_h*, the part that does not depend on h_{t-1}: all steps in one product
    a_x = (x.reshape(T * B, D) @ w_ih.T + b_ih + b_hh).reshape(T, B, 3 * H)
    y = np.zeros((T, B, P), x.dtype)
    hs_prev = np.empty((T, B, P), x.dtype)     # h_{t-1} of every step, for backward
    rs = np.zeros((T, B, H), x.dtype)          # r_t, zero at padded steps
    cs_prev = np.empty((T, B, H), x.dtype)     # c_{t-1}
    cs = np.empty((T, B, H), x.dtype)          # c_t
    gates = np.empty((T, 3, B, H), x.dtype)    # i, g, o
    for t in time_steps(T, reverse):
        hs_prev[t], cs_prev[t] = h, c
        a = a_x[t] + h @ w_hh.T                            # W_i* x_t + b_i* + W_h* h_{t-1} + b_h*
        i = sigmoid(a[:, :H] + p_i * c)                    # i = σ(... + p_i ⊙ c_{t-1})
        g = np.tanh(a[:, H:2 * H])                         # g = tanh(...)
        c_t = c + i * g                                    # c_t = c_{t-1} + i ⊙ g
        o = sigmoid(a[:, 2 * H:] + p_o * c_t)              # o = σ(... + p_o ⊙ c_t)
        r = o * np.tanh(c_t)                               # r_t = o ⊙ tanh(c_t)
        h_t = r if w_hr is None else r @ w_hr.T            # h_t = W_hr r_t
        rs[t] = np.where(valid[t], r, 0)
        gates[t], cs[t] = (i, g, o), np.where(valid[t], c_t, c)  # padded: c_t = c_{t-1}
        y[t] = np.where(valid[t], h_t, 0)                  # padded steps output zero...
        h, c = np.where(valid[t], h_t, h), np.where(valid[t], c_t, c)  # ...and keep their state
    cache = (x, valid, hs_prev, cs_prev, cs, rs, gates, w_ih, w_hh, params["w_peep"], w_hr, reverse)
    return y, (h, c), cache if keep else None


def backward(dy, dstate_n, cache, grads, norms=None):
    x, valid, hs_prev, cs_prev, cs, rs, gates, w_ih, w_hh, w_peep, w_hr, reverse = cache
    T, B, D = x.shape
    H = cs.shape[2]
    p_i, p_o = or_zeros(w_peep, (2, H), x.dtype)
    dh_next, dc_next = dstate_n

    dhs = np.empty(hs_prev.shape, x.dtype)  # dL/dh_t at every step, for W_hr's gradient
    da = np.empty((T, B, 3 * H), x.dtype)  # dL/da, a = the gates' arguments (rows i, g, o), at every step
    for t in reversed(time_steps(T, reverse)):
        i, g, o = gates[t]
        c_t = cs[t]
        tanh_c = np.tanh(c_t)
        dh = np.where(valid[t], dy[t] + dh_next, 0)   # h_t feeds y[t] and step t+1; padded: neither
        dhs[t] = dh
        if w_hr is not None:
            dh = dh @ w_hr                            # h_t = W_hr r_t: from here on dh is dL/dr_t
        dc = np.where(valid[t], dc_next, 0)           # c_t feeds step t+1; padded: it does not
        do = dh * tanh_c                              # r_t = o ⊙ tanh(c_t)
        dc += dh * o * (1 - tanh_c * tanh_c)          # r_t = o ⊙ tanh(c_t)
        da_o = do * o * (1 - o)                       # o = σ(a_o + p_o ⊙ c_t)
        dc += da_o * p_o                              # o = σ(a_o + p_o ⊙ c_t)
        if norms is not None:                         # dh, dc: the whole dL/dh_t, dL/dc_t
            norms[:, t] = np.linalg.norm(dhs[t]), np.linalg.norm(dc)
        di = dc * g                                   # c_t = c_{t-1} + i ⊙ g
        dg = dc * i                                   # c_t = c_{t-1} + i ⊙ g
        dc_prev = dc.copy()                           # c_t = c_{t-1} + i ⊙ g
        da_g = dg * (1 - g * g)                       # g = tanh(a_g)
        da_i = di * i * (1 - i)                       # i = σ(a_i + p_i ⊙ c_{t-1})
        dc_prev += da_i * p_i                         # i = σ(a_i + p_i ⊙ c_{t-1})
        da[t] = np.where(valid[t], np.concatenate((da_i, da_g, da_o), axis=1), 0)  # padded: 0 whatever the gates hold
        dh_next = np.where(valid[t], da[t] @ w_hh, dh_next)  # a = ... W_h* h_{t-1}; padded: h_t = h_{t-1}
        dc_next = np.where(valid[t], dc_prev, dc_next)            # padded: c_t = c_{t-1}

    # The peepholes p_i ⊙ c_{t-1}, p_o ⊙ c_t, summed over all steps and sequences
    if grads["w_peep"] is not None:
        grads["w_peep"][0] += np.sum(da[:, :, :H] * cs_prev, axis=(0, 1))
        grads["w_peep"][1] += np.sum(da[:, :, 2 * H:] * cs, axis=(0, 1))
    if w_hr is not None:                              # h_t = W_hr r_t, summed over all steps and sequences
        grads["w_hr"] += dhs.reshape(T * B, -1).T @ rs.reshape(T * B, H)
    # a = W_i* x_t + b_i* + W_h* h_{t-1} + b_h*, differentiated for all steps at once
    dx = affine_backward(da, x, hs_prev, w_ih, grads)
    return dx, (dh_next, dc_next)  # now dL/dh_0 and dL/dc_0


def gate_activations(cache):
    """The activated gates of the forward that made `cache`: (T, G, B, H), gates in the order i, g, o
    (the contract in fastrnn/_backends.py)."""
    return cache[6].copy()
