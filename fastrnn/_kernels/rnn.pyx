"""Compiled Elman RNN, one direction of one layer (fastrnn/reference/rnn.py in C): `forward` and
`backward` implement the cell contract of docs/layers.md (fastrnn/_backends.py).

h_t = act(x_t.W_ihᵀ + b_ih + h_{t-1}.W_hhᵀ + b_hh), act tanh or relu (docs/math.md). The input
projection of step t is computed into the rows of `y` that then receive h_t, which the gate kernel
also copies into the h sequence, the one buffer backward keeps. Buffers and passes as in
scan.pyx.
"""
import numpy as np

from cython cimport floating
from libc.stdint cimport int64_t
from libc.string cimport memset

from fastrnn._kernels.buffers cimport empty
from fastrnn._kernels.norms cimport record_state_grad
from fastrnn._kernels.products cimport (Operand, add_to, panels_ptr, product_panels, step_matmul,
                                        step_panels)
from fastrnn._kernels.scan cimport (Layout, Scan, Steps, Stop, active_rows, add_operand, bias_ptr,
                                    check_backward, check_cache, check_forward,
                                    gate_gradient_products, init_scan, input_projection, layout,
                                    run_scan, slot_at, step_at, stop_requested)
from fastrnn._kernels.threads cimport MAX_PARTS


cdef struct RnnWork:
    # What the time loop of a pass reads and writes; a thread handles batch rows b0 .. b1-1 of
    # everything per-row.
    bint is_double, relu
    int H, rev
    const Steps *steps
    const Operand *w_hh  # the right operand of the per-step product
    const void *b_ih
    const void *b_hh
    void *hs             # state sequence (H)
    void *y              # per-step (H)
    const void *dy       # per-step (H)
    void *dpre           # per-step (H): the gradient w.r.t. the pre-activation
    void *dh             # (B, H)
    double *dh_sq        # (MAX_PARTS, T) squared norms of dL/dh_t, one row per thread, or NULL


cdef void forward_rows(RnnWork *w, int b0, int b1, int part, Stop *stop,
                       floating *y) noexcept nogil:
    cdef const Steps *st = w.steps
    cdef int T = st.T, H = w.H, rev = w.rev, rows, s, t
    cdef floating *hs = <floating *>w.hs
    for s in range(T):
        if stop_requested(stop, part):
            break
        t = T - 1 - s if rev else s
        rows = active_rows(st, t, b0, b1)
        if rows <= 0:
            continue
        # y[t, rows] += h_{t-1}[rows] @ w_hh.T, then h_t = act(y[t, rows] + biases) into both
        step_matmul(w.w_hh, rows, &hs[slot_at(st, t + rev, b0, H)], H, 1, &y[step_at(st, t, b0, H)],
                    H)
        rnn_forward_step(rows, H, t, NULL, w.relu, &y[step_at(st, t, b0, H)],
                         <const floating *>w.b_ih, <const floating *>w.b_hh,
                         &hs[slot_at(st, t + rev, b0, H)], &hs[slot_at(st, t + 1 - rev, b0, H)])


cdef void backward_rows(RnnWork *w, int b0, int b1, int part, Stop *stop,
                        floating *dpre) noexcept nogil:
    cdef const Steps *st = w.steps
    cdef int T = st.T, H = w.H, rev = w.rev, rows, s, t
    cdef const floating *hs = <const floating *>w.hs
    cdef const floating *dy = <const floating *>w.dy
    cdef floating *dh = <floating *>w.dh + <int64_t>b0 * H
    cdef double *dh_sq = NULL if w.dh_sq == NULL else w.dh_sq + <int64_t>part * T
    for s in range(T):
        if stop_requested(stop, part):
            break
        t = s if rev else T - 1 - s
        rows = active_rows(st, t, b0, b1)
        if rows <= 0:
            continue
        record_state_grad(dh_sq, rows, H, t, NULL, &dy[step_at(st, t, b0, H)], dh)
        rnn_backward_step(rows, H, t, NULL, w.relu, &hs[slot_at(st, t + 1 - rev, b0, H)],
                          &dy[step_at(st, t, b0, H)], dh, &dpre[step_at(st, t, b0, H)])
        # dh[rows] += dpre[t, rows] @ w_hh
        step_matmul(w.w_hh, rows, &dpre[step_at(st, t, b0, H)], H, 1, dh, H)


cdef void forward_part(void *cell, int b0, int b1, int part, Stop *stop) noexcept nogil:
    cdef RnnWork *w = <RnnWork *>cell
    if w.is_double:
        forward_rows(w, b0, b1, part, stop, <double *>w.y)
    else:
        forward_rows(w, b0, b1, part, stop, <float *>w.y)


cdef void backward_part(void *cell, int b0, int b1, int part, Stop *stop) noexcept nogil:
    cdef RnnWork *w = <RnnWork *>cell
    if w.is_double:
        backward_rows(w, b0, b1, part, stop, <double *>w.dpre)
    else:
        backward_rows(w, b0, b1, part, stop, <float *>w.dpre)


cdef class _Cache:
    """What backward needs from forward: the pass's buffers and its inputs (not copied), and
    what forward got with its checked sizes, which backward checks its arguments against."""
    cdef tuple inputs, sizes  # (x, w_ih, w_hh, w_hr, lengths); (dtype, T, B, D, H, G, Hh)
    cdef object x, w_ih, w_hh, hs
    cdef Layout layout
    cdef bint relu


def forward(x, state0, params, lengths, reverse, nonlinearity="tanh", keep=True):
    """Elman RNN forward over one direction of one layer -> (y, (h_n,), cache).

    Parameters and returns as the cell contract of fastrnn/_backends.py (docs/layers.md); without
    `keep`, cache is None. Every argument is checked against the weights' sizes first
    (TypeError/ValueError)."""
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    sizes = check_forward("Elman RNN", x, state0, 1, params, lengths, (1,))
    cdef _Cache cache = _Cache.__new__(_Cache)
    cache.inputs, cache.sizes = (x, params["w_ih"], params["w_hh"], None, lengths), sizes
    cdef Layout lay = layout(lengths, x.shape[0], x.shape[1], reverse)
    cache.layout, cache.relu = lay, nonlinearity == "relu"
    cache.x, cache.w_ih, cache.w_hh = lay.pack(x), params["w_ih"], params["w_hh"]
    # Kept for backward: the h sequence only (and the initial state).
    cache.hs = lay.state_sequence(state0[0])
    if x.dtype == np.float32:
        y = _forward[float](cache.x, cache.w_ih, cache.w_hh, params["b_ih"], params["b_hh"], cache)
    else:
        y = _forward[double](cache.x, cache.w_ih, cache.w_hh, params["b_ih"], params["b_hh"],
                             cache)
    return lay.unpack(y), (lay.final(cache.hs),), cache if keep else None


cdef object _forward(const floating[:, ::1] x, const floating[:, ::1] w_ih,
                     const floating[:, ::1] w_hh, const floating[::1] b_ih,
                     const floating[::1] b_hh, _Cache cache):
    """The time loop and the products of forward on the packed x; returns the packed y."""
    cdef Layout lay = cache.layout
    cdef int R = lay.rows, D = x.shape[1], H = w_hh.shape[1]
    cdef int T = lay.steps.T, B = lay.steps.B
    cdef RnnWork work
    cdef Scan scan
    dtype = np.float32 if floating is float else np.float64
    y_array = empty((R, H), dtype)
    cdef floating[:, ::1] hs = cache.hs, y = y_array
    cdef floating[::1] panels = step_panels(H, H, dtype, T, B)
    cdef floating[::1] panels_ih = product_panels(R, D, H, dtype)

    memset(&work, 0, sizeof(RnnWork))
    init_scan(&scan, floating is double, True, lay, forward_part, &work)
    work.is_double, work.relu = floating is double, cache.relu
    work.H, work.rev, work.steps = H, lay.reverse, &lay.steps
    # per step: @ w_hh.T
    work.w_hh = add_operand(&scan, H, H, &w_hh[0, 0], H, True, panels_ptr(panels))
    work.b_ih, work.b_hh = bias_ptr(b_ih), bias_ptr(b_hh)
    work.hs, work.y = &hs[0, 0], &y[0, 0]
    # y = x @ w_ih.T
    input_projection(&scan.products, R, D, H, &x[0, 0], &w_ih[0, 0], &y[0, 0], H,
                     panels_ptr(panels_ih))
    run_scan(&scan, <int64_t>R * H * (D + H))
    return y_array


def backward(dy, dstate_n, cache, grads, norms=None):
    """Elman RNN backward through one forward call -> (dx, (dh0,)); adds into `grads`.

    Parameters and returns as the cell contract of fastrnn/_backends.py (docs/layers.md),
    `norms` ((1, T) float64 or None) included; every argument is checked against the sizes of the
    forward call first (TypeError/ValueError)."""
    cdef _Cache c = check_cache(cache, _Cache)
    dtype, T, B, D, H, G, Hh = c.sizes
    check_backward("Elman RNN", dy, dstate_n, 1, grads, c.inputs, dtype, T, B, D, H, G, Hh, norms)
    cdef Layout lay = c.layout
    dh = lay.sort(dstate_n[0])
    # Per-thread rows of squared norms, summed after the pass: no two threads share a row.
    sq = None if norms is None else np.zeros((MAX_PARTS, dy.shape[0]))
    if dy.dtype == np.float32:
        dx = _backward[float](lay.pack(dy), dh, c.x, c.w_ih, c.w_hh, lay, c.hs, c.relu,
                              grads["w_ih"], grads["w_hh"], grads["b_ih"], grads["b_hh"],
                              sq)
    else:
        dx = _backward[double](lay.pack(dy), dh, c.x, c.w_ih, c.w_hh, lay, c.hs, c.relu,
                               grads["w_ih"], grads["w_hh"], grads["b_ih"], grads["b_hh"],
                               sq)
    if norms is not None:
        np.sqrt(sq.sum(axis=0), out=norms[0])
    return lay.unpack(dx), (lay.unsort(dh),)


def gate_activations(cache):
    """The activations of the forward that made `cache`: (T, 1, B, H), h_t of every step
    (padded steps: zeros); the contract in fastrnn/_backends.py."""
    cdef _Cache c = check_cache(cache, _Cache)
    return c.layout.states_after_steps(c.hs)[:, None].copy()


cdef object _backward(const floating[:, ::1] dy, floating[:, ::1] dh,
                      const floating[:, ::1] x, const floating[:, ::1] w_ih,
                      const floating[:, ::1] w_hh, Layout lay, const floating[:, ::1] hs,
                      bint relu, floating[:, ::1] dw_ih, floating[:, ::1] dw_hh,
                      floating[::1] db_ih, floating[::1] db_hh, double[:, ::1] sq):
    """The time loop and the products of backward on the packed dy, from dh (the final state
    gradient, sorted; left as that of the initial state); returns the packed dx."""
    cdef int R = lay.rows, D = x.shape[1], H = hs.shape[1]
    cdef int T = lay.steps.T, B = lay.steps.B
    cdef RnnWork work
    cdef Scan scan
    dtype = np.float32 if floating is float else np.float64
    dx_array = empty((R, D), dtype)
    dpre_array = empty((R, H), dtype)
    lay.zero_unused(dpre_array)
    cdef floating[:, ::1] dx = dx_array, dpre = dpre_array
    cdef double[:, ::1] dbias = np.zeros((MAX_PARTS, H))  # see ColumnSum
    cdef floating[::1] panels = step_panels(H, H, dtype, T, B)
    cdef floating[::1] panels_ih = product_panels(R, H, D, dtype)

    memset(&work, 0, sizeof(RnnWork))
    init_scan(&scan, floating is double, False, lay, backward_part, &work)
    work.is_double, work.relu = floating is double, relu
    work.H, work.rev, work.steps = H, lay.reverse, &lay.steps
    # per step: @ w_hh
    work.w_hh = add_operand(&scan, H, H, &w_hh[0, 0], H, False, panels_ptr(panels))
    work.hs, work.dy = <void *>&hs[0, 0], &dy[0, 0]
    work.dpre, work.dh = &dpre[0, 0], &dh[0, 0]
    work.dh_sq = NULL if sq is None else &sq[0, 0]
    # dx = dpre @ w_ih; dw_ih += dpre.T @ x; dw_hh += dpre.T @ h_{t-1}; dbias = dpre.sum((0, 1))
    gate_gradient_products(&scan.products, R, D, H, H, &dpre[0, 0], &w_ih[0, 0], &x[0, 0],
                           &hs[0, 0] + slot_at(&lay.steps, lay.reverse, 0, H), &dx[0, 0],
                           &dw_ih[0, 0], &dw_hh[0, 0], NULL if db_ih is None else &dbias[0, 0],
                           panels_ptr(panels_ih))
    run_scan(&scan, <int64_t>R * H * (D + H))
    if db_ih is not None:
        add_to(&db_ih[0], &dbias[0, 0], H)
        add_to(&db_hh[0], &dbias[0, 0], H)
    return dx_array
