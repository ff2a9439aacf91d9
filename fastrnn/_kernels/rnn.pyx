"""Compiled Elman RNN, one direction of one layer (fastrnn/reference/rnn.py in C): `forward` and
`backward` implement the cell contract of docs/layers.md (fastrnn/_backends.py).

h_t = act(x_t.W_ihᵀ + b_ih + h_{t-1}.W_hhᵀ + b_hh), act tanh or relu (docs/math.md). The input
projection of step t is computed into the slot of `hs` that then receives h_t, so backward keeps
only the h sequence. Buffers and passes as in scan.pyx.
"""
import numpy as np

from cython cimport floating
from libc.stdint cimport int64_t
from libc.string cimport memset

from fastrnn._kernels.buffers cimport empty
from fastrnn._kernels.norms cimport record_state_grad
from fastrnn._kernels.products cimport (Operand, add_to, panels_ptr, product_panels, step_matmul,
                                        step_panels)
from fastrnn._kernels.scan cimport (Scan, add_operand, at, bias_ptr, copy_state,
                                    gate_gradient_products, init_scan, input_projection,
                                    lengths_from, lengths_ptr, run_scan)
from fastrnn._kernels.threads cimport MAX_PARTS


cdef struct RnnWork:
    # What the time loop of a pass reads and writes; a thread handles batch rows b0 .. b1-1 of
    # everything per-row.
    bint is_double, relu
    int T, B, H, rev
    const int64_t *lengths
    const Operand *w_hh  # the right operand of the per-step product
    const void *b_ih
    const void *b_hh
    void *hs             # (T+1, B, H)
    void *y              # (T, B, H)
    const void *dy       # (T, B, H)
    void *dpre           # (T, B, H): the gradient w.r.t. the pre-activation
    void *dh             # (B, H)
    double *dh_sq        # (MAX_PARTS, T) squared norms of dL/dh_t, one row per thread, or NULL


cdef void forward_rows(RnnWork *w, int b0, int b1, floating *hs) noexcept nogil:
    cdef int T = w.T, B = w.B, H = w.H, rev = w.rev, rows = b1 - b0, s, t
    cdef const int64_t *lengths = lengths_from(w.lengths, b0)
    cdef floating *y = <floating *>w.y
    for s in range(T):
        t = T - 1 - s if rev else s
        # hs[t + 1 - rev, rows] += hs[t + rev, rows] @ w_hh.T
        step_matmul(w.w_hh, rows, &hs[at(t + rev, b0, B, H)], H, 1,
                    &hs[at(t + 1 - rev, b0, B, H)], H)
        rnn_forward_step(rows, H, t, lengths, w.relu, &hs[at(t + 1 - rev, b0, B, H)],
                         <const floating *>w.b_ih, <const floating *>w.b_hh,
                         &hs[at(t + rev, b0, B, H)], &y[at(t, b0, B, H)])


cdef void backward_rows(RnnWork *w, int b0, int b1, int part, floating *dpre) noexcept nogil:
    cdef int T = w.T, B = w.B, H = w.H, rev = w.rev, rows = b1 - b0, s, t
    cdef const int64_t *lengths = lengths_from(w.lengths, b0)
    cdef const floating *hs = <const floating *>w.hs
    cdef const floating *dy = <const floating *>w.dy
    cdef floating *dh = <floating *>w.dh + <int64_t>b0 * H
    cdef double *dh_sq = NULL if w.dh_sq == NULL else w.dh_sq + <int64_t>part * T
    for s in range(T):
        t = s if rev else T - 1 - s
        record_state_grad(dh_sq, rows, H, t, lengths, &dy[at(t, b0, B, H)], dh)
        rnn_backward_step(rows, H, t, lengths, w.relu, &hs[at(t + 1 - rev, b0, B, H)],
                          &dy[at(t, b0, B, H)], dh, &dpre[at(t, b0, B, H)])
        # dh[rows] += dpre[t, rows] @ w_hh
        step_matmul(w.w_hh, rows, &dpre[at(t, b0, B, H)], H, 1, dh, H)


cdef void forward_part(void *cell, int b0, int b1, int part) noexcept nogil:
    cdef RnnWork *w = <RnnWork *>cell
    if w.is_double:
        forward_rows(w, b0, b1, <double *>w.hs)
    else:
        forward_rows(w, b0, b1, <float *>w.hs)


cdef void backward_part(void *cell, int b0, int b1, int part) noexcept nogil:
    cdef RnnWork *w = <RnnWork *>cell
    if w.is_double:
        backward_rows(w, b0, b1, part, <double *>w.dpre)
    else:
        backward_rows(w, b0, b1, part, <float *>w.dpre)


cdef class _Cache:
    """What backward needs from forward: the pass's buffers and its inputs (not copied)."""
    cdef object x, w_ih, w_hh, lengths, hs
    cdef bint reverse, relu


def forward(x, state0, params, lengths, reverse, nonlinearity="tanh"):
    """Elman RNN forward over one direction of one layer -> (y, (h_n,), cache).

    Parameters and returns as the cell contract of fastrnn/_backends.py (docs/layers.md)."""
    cdef _Cache cache = _Cache.__new__(_Cache)
    relu = nonlinearity == "relu"
    if x.dtype == np.float32:
        y, state_n = _forward[float](x, state0[0], params["w_ih"], params["w_hh"], params["b_ih"],
                                     params["b_hh"], lengths, reverse, relu, cache)
    else:
        y, state_n = _forward[double](x, state0[0], params["w_ih"], params["w_hh"],
                                      params["b_ih"], params["b_hh"], lengths, reverse, relu,
                                      cache)
    return y, state_n, cache


cdef tuple _forward(const floating[:, :, ::1] x, const floating[:, ::1] h0,
                    const floating[:, ::1] w_ih, const floating[:, ::1] w_hh,
                    const floating[::1] b_ih, const floating[::1] b_hh,
                    const int64_t[::1] lengths, bint reverse, bint relu, _Cache cache):
    cdef int T = x.shape[0], B = x.shape[1], D = x.shape[2], H = h0.shape[1]
    cdef int rev = reverse
    cdef RnnWork work
    cdef Scan scan
    dtype = np.float32 if floating is float else np.float64
    # Kept for backward: the h sequence only (and the initial state).
    hs_array = empty((T + 1, B, H), dtype)
    y_array = empty((T, B, H), dtype)
    h_n_array = empty((B, H), dtype)
    cdef floating[:, :, ::1] hs = hs_array, y = y_array
    cdef floating[:, ::1] h_n = h_n_array
    cdef floating[::1] panels = step_panels(H, H, dtype)
    cdef floating[::1] panels_ih = product_panels(T * B, D, H, dtype)

    memset(&work, 0, sizeof(RnnWork))
    init_scan(&scan, floating is double, True, B, forward_part, &work)
    work.is_double, work.relu = floating is double, relu
    work.T, work.B, work.H, work.rev, work.lengths = T, B, H, rev, lengths_ptr(lengths)
    # per step: @ w_hh.T
    work.w_hh = add_operand(&scan, H, H, &w_hh[0, 0], H, True, panels_ptr(panels))
    work.b_ih, work.b_hh = bias_ptr(b_ih), bias_ptr(b_hh)
    work.hs, work.y = &hs[0, 0, 0], &y[0, 0, 0]
    # hs[1 - rev:T + 1 - rev] = x @ w_ih.T
    input_projection(&scan.products, T * B, D, H, &x[0, 0, 0], &w_ih[0, 0], &hs[1 - rev, 0, 0],
                     H, panels_ptr(panels_ih))

    copy_state(&hs[rev * T, 0, 0], &h0[0, 0], B, H)
    run_scan(&scan, <int64_t>T * B * H * (D + H))
    copy_state(&h_n[0, 0], &hs[(1 - rev) * T, 0, 0], B, H)
    cache.x, cache.w_ih, cache.w_hh = x.base, w_ih.base, w_hh.base
    cache.lengths = None if lengths is None else lengths.base
    cache.hs, cache.reverse, cache.relu = hs_array, reverse, relu
    return y_array, (h_n_array,)


def backward(dy, dstate_n, cache, grads, norms=None):
    """Elman RNN backward through one forward call -> (dx, (dh0,)); adds into `grads`.

    Parameters and returns as the cell contract of fastrnn/_backends.py (docs/layers.md),
    `norms` ((1, T) float64 or None) included."""
    cdef _Cache c = cache
    # Per-thread rows of squared norms, summed after the pass: no two threads share a row.
    sq = None if norms is None else np.zeros((MAX_PARTS, dy.shape[0]))
    if dy.dtype == np.float32:
        result = _backward[float](dy, dstate_n[0], c.x, c.w_ih, c.w_hh, c.lengths, c.hs,
                                  c.reverse, c.relu, grads["w_ih"], grads["w_hh"], grads["b_ih"],
                                  grads["b_hh"], sq)
    else:
        result = _backward[double](dy, dstate_n[0], c.x, c.w_ih, c.w_hh, c.lengths, c.hs,
                                   c.reverse, c.relu, grads["w_ih"], grads["w_hh"],
                                   grads["b_ih"], grads["b_hh"], sq)
    if norms is not None:
        np.sqrt(sq.sum(axis=0), out=norms[0])
    return result


def gate_activations(cache):
    """The activations of the forward that made `cache`: (T, 1, B, H), h_t = act(...) of every
    step (padded steps: the carried state); the contract in fastrnn/_backends.py."""
    cdef _Cache c = cache
    T = c.hs.shape[0] - 1
    hs = c.hs[:T] if c.reverse else c.hs[1:]  # h_t sits at t + 1 - reverse
    return hs[:, None].copy()


cdef tuple _backward(const floating[:, :, ::1] dy, const floating[:, ::1] dh_n,
                     const floating[:, :, ::1] x, const floating[:, ::1] w_ih,
                     const floating[:, ::1] w_hh, const int64_t[::1] lengths,
                     const floating[:, :, ::1] hs, bint reverse, bint relu,
                     floating[:, ::1] dw_ih, floating[:, ::1] dw_hh, floating[::1] db_ih,
                     floating[::1] db_hh, double[:, ::1] sq):
    cdef int T = x.shape[0], B = x.shape[1], D = x.shape[2], H = hs.shape[2]
    cdef int rev = reverse
    cdef RnnWork work
    cdef Scan scan
    dtype = np.float32 if floating is float else np.float64
    dx_array = empty((T, B, D), dtype)
    dpre_array = empty((T, B, H), dtype)
    dh_array = empty((B, H), dtype)
    cdef floating[:, :, ::1] dx = dx_array, dpre = dpre_array
    cdef floating[:, ::1] dh = dh_array
    cdef double[:, ::1] dbias = np.zeros((MAX_PARTS, H))  # see ColumnSum
    cdef floating[::1] panels = step_panels(H, H, dtype)
    cdef floating[::1] panels_ih = product_panels(T * B, H, D, dtype)

    memset(&work, 0, sizeof(RnnWork))
    init_scan(&scan, floating is double, False, B, backward_part, &work)
    work.is_double, work.relu = floating is double, relu
    work.T, work.B, work.H, work.rev, work.lengths = T, B, H, rev, lengths_ptr(lengths)
    # per step: @ w_hh
    work.w_hh = add_operand(&scan, H, H, &w_hh[0, 0], H, False, panels_ptr(panels))
    work.hs, work.dy = <void *>&hs[0, 0, 0], &dy[0, 0, 0]
    work.dpre, work.dh = &dpre[0, 0, 0], &dh[0, 0]
    work.dh_sq = NULL if sq is None else &sq[0, 0]
    # dx = dpre @ w_ih; dw_ih += dpre.T @ x; dw_hh += dpre.T @ hs[rev:rev + T];
    # dbias = dpre.sum((0, 1))
    gate_gradient_products(&scan.products, T * B, D, H, H, &dpre[0, 0, 0], &w_ih[0, 0],
                           &x[0, 0, 0], &hs[rev, 0, 0], &dx[0, 0, 0], &dw_ih[0, 0], &dw_hh[0, 0],
                           NULL if db_ih is None else &dbias[0, 0], panels_ptr(panels_ih))

    copy_state(&dh[0, 0], &dh_n[0, 0], B, H)
    run_scan(&scan, <int64_t>T * B * H * (D + H))
    if db_ih is not None:
        add_to(&db_ih[0], &dbias[0, 0], H)
        add_to(&db_hh[0], &dbias[0, 0], H)
    return dx_array, (dh_array,)
