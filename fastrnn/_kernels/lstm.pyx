"""Compiled LSTM, one direction of one layer (fastrnn/reference/lstm.py and lstm_nf.py in C):
`forward` and `backward` implement the cell contract of docs/layers.md (fastrnn/_backends.py).

The gate rows are i, f, g, o (G = 4), or i, g, o (G = 3) for the cell without forget gate of
Hochreiter & Schmidhuber 1997 (docs/math.md); the parameters' shapes say which. Buffers and
passes as in scan.pyx.
"""
import numpy as np

from cython cimport floating
from libc.stdint cimport int64_t
from libc.string cimport memset

from fastrnn._kernels.buffers cimport empty
from fastrnn._kernels.norms cimport record_state_grad
from fastrnn._kernels.products cimport (Operand, add_to, panels_ptr, product_panels,
                                        step_matmul, step_panels)
from fastrnn._kernels.scan cimport (Layout, Scan, Steps, active_rows, add_operand, bias_ptr,
                                    gate_gradient_products, init_scan, input_projection, layout,
                                    run_scan, slot_at, step_at)
from fastrnn._kernels.threads cimport MAX_PARTS


cdef struct LstmWork:
    # What the time loop of a pass reads and writes; a thread handles batch rows b0 .. b1-1 of
    # everything per-row. The forward buffers (gates .. y) are written by forward and only read
    # by backward.
    bint is_double, forget_gate
    int H, G, P, rev  # P: peephole rows, 3 (i, f, o) or 2 (i, o)
    const Steps *steps
    const Operand *w_hh  # the right operand of the per-step product
    const void *b_ih
    const void *b_hh
    const void *w_peep   # (P, H), zeros without peepholes
    void *gates          # per-step (G*H)
    void *hs             # state sequence (H)
    void *cs             # state sequence (H)
    void *y              # per-step (H)
    const void *dy       # per-step (H)
    void *dgates         # per-step (G*H)
    void *dh             # (B, H)
    void *dc             # (B, H)
    double *dpeep        # (MAX_PARTS, P*H) accumulators, one per thread, or NULL
    double *dh_sq        # (MAX_PARTS, T) squared norms of dL/dh_t, one row per thread, or NULL
    double *dc_sq        # (MAX_PARTS, T) the same for dL/dc_t, or NULL (no record)


cdef void forward_rows(LstmWork *w, int b0, int b1, floating *gates) noexcept nogil:
    cdef const Steps *st = w.steps
    cdef int T = st.T, H = w.H, G = w.G, rev = w.rev, rows, s, t
    cdef floating *hs = <floating *>w.hs
    cdef floating *cs = <floating *>w.cs
    cdef floating *y = <floating *>w.y
    for s in range(T):
        t = T - 1 - s if rev else s
        rows = active_rows(st, t, b0, b1)
        if rows <= 0:
            continue
        # gates[t, rows] += hs[t + rev, rows] @ w_hh.T
        step_matmul(w.w_hh, rows, &hs[slot_at(st, t + rev, b0, H)], H, 1,
                    &gates[step_at(st, t, b0, G)], G)
        lstm_forward_step(w.forget_gate, rows, H, t, NULL, &gates[step_at(st, t, b0, G)],
                          <const floating *>w.b_ih, <const floating *>w.b_hh,
                          <const floating *>w.w_peep, &hs[slot_at(st, t + rev, b0, H)],
                          &cs[slot_at(st, t + rev, b0, H)], &hs[slot_at(st, t + 1 - rev, b0, H)],
                          &cs[slot_at(st, t + 1 - rev, b0, H)], &y[step_at(st, t, b0, H)])


cdef void backward_rows(LstmWork *w, int b0, int b1, int part, floating *dgates) noexcept nogil:
    cdef const Steps *st = w.steps
    cdef int T = st.T, H = w.H, G = w.G, rev = w.rev, rows, s, t
    cdef const floating *gates = <const floating *>w.gates
    cdef const floating *cs = <const floating *>w.cs
    cdef const floating *dy = <const floating *>w.dy
    cdef floating *dh = <floating *>w.dh + <int64_t>b0 * H
    cdef floating *dc = <floating *>w.dc + <int64_t>b0 * H
    cdef double *dpeep = NULL if w.dpeep == NULL else w.dpeep + <int64_t>part * w.P * H
    cdef double *dh_sq = NULL if w.dh_sq == NULL else w.dh_sq + <int64_t>part * T
    cdef double *dc_sq = NULL if w.dc_sq == NULL else w.dc_sq + <int64_t>part * T
    for s in range(T):
        t = s if rev else T - 1 - s
        rows = active_rows(st, t, b0, b1)
        if rows <= 0:
            continue
        record_state_grad(dh_sq, rows, H, t, NULL, &dy[step_at(st, t, b0, H)], dh)
        lstm_backward_step(w.forget_gate, rows, H, t, NULL, &gates[step_at(st, t, b0, G)],
                           &cs[slot_at(st, t + rev, b0, H)], &cs[slot_at(st, t + 1 - rev, b0, H)],
                           <const floating *>w.w_peep, &dy[step_at(st, t, b0, H)], dh, dc,
                           &dgates[step_at(st, t, b0, G)], dpeep,
                           NULL if dc_sq == NULL else dc_sq + t)
        # dh[rows] += dgates[t, rows] @ w_hh
        step_matmul(w.w_hh, rows, &dgates[step_at(st, t, b0, G)], G, 1, dh, H)


cdef void forward_part(void *cell, int b0, int b1, int part) noexcept nogil:
    cdef LstmWork *w = <LstmWork *>cell
    if w.is_double:
        forward_rows(w, b0, b1, <double *>w.gates)
    else:
        forward_rows(w, b0, b1, <float *>w.gates)


cdef void backward_part(void *cell, int b0, int b1, int part) noexcept nogil:
    cdef LstmWork *w = <LstmWork *>cell
    if w.is_double:
        backward_rows(w, b0, b1, part, <double *>w.dgates)
    else:
        backward_rows(w, b0, b1, part, <float *>w.dgates)


cdef class _Cache:
    """What backward needs from forward: the pass's buffers and its inputs (not copied)."""
    cdef object x, w_ih, w_hh, w_peep, gates, hs, cs
    cdef Layout layout


def forward(x, state0, params, lengths, reverse):
    """LSTM forward over one direction of one layer -> (y, (h_n, c_n), cache).

    Parameters and returns as the cell contract of fastrnn/_backends.py (docs/layers.md); the
    cell has no forget gate when w_ih has 3H rows (gates i, g, o, w_peep (2, H))."""
    w_hh = params["w_hh"]
    H = w_hh.shape[1]
    w_peep = params["w_peep"]
    cdef _Cache cache = _Cache.__new__(_Cache)
    if w_peep is None:
        w_peep = np.zeros((w_hh.shape[0] // H - 1, H), w_hh.dtype)
    cdef Layout lay = layout(lengths, x.shape[0], x.shape[1], reverse)
    cache.layout, cache.x, cache.w_ih, cache.w_hh = lay, lay.pack(x), params["w_ih"], w_hh
    cache.w_peep = w_peep
    cache.hs, cache.cs = lay.state_sequence(state0[0]), lay.state_sequence(state0[1])
    if x.dtype == np.float32:
        y = _forward[float](cache.x, params["w_ih"], w_hh, params["b_ih"], params["b_hh"], w_peep,
                            cache)
    else:
        y = _forward[double](cache.x, params["w_ih"], w_hh, params["b_ih"], params["b_hh"],
                             w_peep, cache)
    return lay.unpack(y), (lay.final(cache.hs), lay.final(cache.cs)), cache


cdef object _forward(const floating[:, ::1] x, const floating[:, ::1] w_ih,
                     const floating[:, ::1] w_hh, const floating[::1] b_ih,
                     const floating[::1] b_hh, const floating[:, ::1] w_peep, _Cache cache):
    """The time loop and the products of forward on the packed x; returns the packed y."""
    cdef Layout lay = cache.layout
    cdef int R = lay.rows, D = x.shape[1], H = w_hh.shape[1], G = w_ih.shape[0]
    cdef LstmWork work
    cdef Scan scan
    dtype = np.float32 if floating is float else np.float64
    # Kept for backward: the activated gates and the h and c sequences (and the initial state).
    cache.gates = empty((R, G), dtype)
    y_array = empty((R, H), dtype)
    cdef floating[:, ::1] gates = cache.gates, hs = cache.hs, cs = cache.cs, y = y_array
    cdef floating[::1] panels = step_panels(H, G, dtype)
    cdef floating[::1] panels_ih = product_panels(R, D, G, dtype)

    memset(&work, 0, sizeof(LstmWork))
    init_scan(&scan, floating is double, True, lay, forward_part, &work)
    work.is_double, work.forget_gate = floating is double, G == 4 * H
    work.H, work.G, work.P, work.rev = H, G, w_peep.shape[0], lay.reverse
    work.steps = &lay.steps
    # per step: @ w_hh.T
    work.w_hh = add_operand(&scan, H, G, &w_hh[0, 0], H, True, panels_ptr(panels))
    work.w_peep = &w_peep[0, 0]
    work.b_ih, work.b_hh = bias_ptr(b_ih), bias_ptr(b_hh)
    work.gates, work.hs, work.cs, work.y = &gates[0, 0], &hs[0, 0], &cs[0, 0], &y[0, 0]
    # gates = x @ w_ih.T
    input_projection(&scan.products, R, D, G, &x[0, 0], &w_ih[0, 0], &gates[0, 0], G,
                     panels_ptr(panels_ih))
    run_scan(&scan, <int64_t>R * G * (D + H))
    return y_array


def backward(dy, dstate_n, cache, grads, norms=None):
    """LSTM backward through one forward call -> (dx, (dh0, dc0)); adds into `grads`.

    Parameters and returns as the cell contract of fastrnn/_backends.py (docs/layers.md),
    `norms` ((2, T) float64 or None) included."""
    cdef _Cache c = cache
    cdef Layout lay = c.layout
    dh, dc = lay.sort(dstate_n[0]), lay.sort(dstate_n[1])
    # Per-thread rows of squared norms, summed after the pass: no two threads share a row.
    sq = None if norms is None else np.zeros((2, MAX_PARTS, dy.shape[0]))
    if dy.dtype == np.float32:
        dx = _backward[float](lay.pack(dy), dh, dc, c.x, c.w_ih, c.w_hh, c.w_peep, lay, c.gates,
                              c.hs, c.cs, grads["w_ih"], grads["w_hh"], grads["b_ih"],
                              grads["b_hh"], grads["w_peep"], sq)
    else:
        dx = _backward[double](lay.pack(dy), dh, dc, c.x, c.w_ih, c.w_hh, c.w_peep, lay, c.gates,
                               c.hs, c.cs, grads["w_ih"], grads["w_hh"], grads["b_ih"],
                               grads["b_hh"], grads["w_peep"], sq)
    if norms is not None:
        np.sqrt(sq.sum(axis=1), out=norms)
    return lay.unpack(dx), (lay.unsort(dh), lay.unsort(dc))


def gate_activations(cache):
    """The activated gates of the forward that made `cache`: (T, G, B, H), rows of G in the
    cell spec's gate order (i, f, g, o or i, g, o); the contract in fastrnn/_backends.py."""
    cdef _Cache c = cache
    gates = c.layout.unpack(c.gates)
    T, B, GH = gates.shape
    H = c.hs.shape[1]
    return gates.reshape(T, B, GH // H, H).transpose(0, 2, 1, 3).copy()


cdef object _backward(const floating[:, ::1] dy, floating[:, ::1] dh, floating[:, ::1] dc,
                      const floating[:, ::1] x, const floating[:, ::1] w_ih,
                      const floating[:, ::1] w_hh, const floating[:, ::1] w_peep, Layout lay,
                      const floating[:, ::1] gates, const floating[:, ::1] hs,
                      const floating[:, ::1] cs, floating[:, ::1] dw_ih, floating[:, ::1] dw_hh,
                      floating[::1] db_ih, floating[::1] db_hh, floating[:, ::1] dw_peep,
                      double[:, :, ::1] sq):
    """The time loop and the products of backward on the packed dy, from dh, dc (the final state
    gradients, sorted; left as those of the initial state); returns the packed dx."""
    cdef int R = lay.rows, D = x.shape[1], H = hs.shape[1], G = w_ih.shape[0]
    cdef int P = w_peep.shape[0], rev = lay.reverse, part
    cdef LstmWork work
    cdef Scan scan
    dtype = np.float32 if floating is float else np.float64
    dx_array = empty((R, D), dtype)
    dgates_array = empty((R, G), dtype)
    lay.zero_unused(dgates_array)
    cdef floating[:, ::1] dx = dx_array, dgates = dgates_array
    cdef double[:, ::1] dbias = np.zeros((MAX_PARTS, G))  # see ColumnSum
    cdef double[:, ::1] dpeep = np.zeros((MAX_PARTS, P * H))  # one accumulator per thread
    cdef floating[::1] panels = step_panels(G, H, dtype)
    cdef floating[::1] panels_ih = product_panels(R, G, D, dtype)

    memset(&work, 0, sizeof(LstmWork))
    init_scan(&scan, floating is double, False, lay, backward_part, &work)
    work.is_double, work.forget_gate = floating is double, G == 4 * H
    work.H, work.G, work.P, work.rev = H, G, P, rev
    work.steps = &lay.steps
    # per step: @ w_hh
    work.w_hh = add_operand(&scan, G, H, &w_hh[0, 0], H, False, panels_ptr(panels))
    work.w_peep = &w_peep[0, 0]
    work.gates, work.cs, work.dy = <void *>&gates[0, 0], <void *>&cs[0, 0], &dy[0, 0]
    work.dgates, work.dh, work.dc = &dgates[0, 0], &dh[0, 0], &dc[0, 0]
    work.dpeep = NULL if dw_peep is None else &dpeep[0, 0]
    if sq is not None:
        work.dh_sq, work.dc_sq = &sq[0, 0, 0], &sq[1, 0, 0]
    # dx = dgates @ w_ih; dw_ih += dgates.T @ x; dw_hh += dgates.T @ hs[rev:rev + T];
    # dbias = dgates.sum((0, 1))
    gate_gradient_products(&scan.products, R, D, H, G, &dgates[0, 0], &w_ih[0, 0], &x[0, 0],
                           &hs[0, 0] + slot_at(&lay.steps, rev, 0, H), &dx[0, 0], &dw_ih[0, 0],
                           &dw_hh[0, 0], NULL if db_ih is None else &dbias[0, 0],
                           panels_ptr(panels_ih))
    run_scan(&scan, <int64_t>R * G * (D + H))
    if db_ih is not None:
        add_to(&db_ih[0], &dbias[0, 0], G)
        add_to(&db_hh[0], &dbias[0, 0], G)
    if dw_peep is not None:
        for part in range(MAX_PARTS):  # the rows of threads that did not run are zeros
            add_to(&dw_peep[0, 0], &dpeep[part, 0], P * H)
    return dx_array
