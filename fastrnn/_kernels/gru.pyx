"""Compiled GRU, one direction of one layer (fastrnn/reference/gru.py in C): `forward` and
`backward` implement the cell contract of docs/layers.md (fastrnn/_backends.py).

Gate rows r, z, n (docs/math.md). reset_after=True applies r to W_hn h_{t-1} + b_hn, so one
product per step gives everything; reset_after=False applies it to h_{t-1} before W_hn, so a
step makes two products, around the r half of the gate kernels. Buffers and passes as in
scan.pyx.
"""
import numpy as np

from cython cimport floating
from libc.stdint cimport int64_t
from libc.string cimport memset

from fastrnn._kernels.buffers cimport empty
from fastrnn._kernels.norms cimport record_state_grad
from fastrnn._kernels.products cimport (Operand, Products, add_to, column_sum, pack_last,
                                        panels_ptr, product, product_panels, step_matmul,
                                        step_panels)
from fastrnn._kernels.scan cimport (Layout, Scan, Steps, Stop, active_rows, add_operand, bias_ptr,
                                    check_backward, check_cache, check_forward, init_scan,
                                    input_gradient_products, input_projection, layout, run_scan,
                                    slot_at, step_at, stop_requested)
from fastrnn._kernels.threads cimport MAX_PARTS


cdef struct GruWork:
    # What the time loop of a pass reads and writes; a thread handles batch rows b0 .. b1-1 of
    # everything per-row. The forward buffers (gates .. y) are written by forward and only read
    # by backward.
    bint is_double, reset_after
    int H, G, rev
    const Steps *steps
    # The right operands of the per-step products: W_hh (reset_after), or its r, z rows and its
    # n rows (reset_after=False); transposed in forward.
    const Operand *w_hh
    const Operand *w_hn
    const void *b_ih
    const void *b_hh
    void *gates   # per-step (G*H)
    void *hs      # state sequence (H)
    void *hn      # per-step (H): W_hn h_{t-1} + b_hn (reset_after)
    void *rh      # per-step (H): r * h_{t-1} (reset_after=False)
    void *y       # per-step (H)
    void *hproj   # (B, G*H): one step's h_{t-1}.W_hhᵀ (forward, reset_after)
    const void *dy  # per-step (H)
    void *dgates  # per-step (G*H)
    void *dn      # per-step (H): the n gradient as W_ih sees it (reset_after)
    void *drh     # (B, H): one step's d(r * h_{t-1}) (backward, reset_after=False)
    void *dh      # (B, H)
    double *dh_sq  # (MAX_PARTS, T) squared norms of dL/dh_t, one row per thread, or NULL


cdef void forward_rows(GruWork *w, int b0, int b1, int part, Stop *stop,
                       floating *gates) noexcept nogil:
    cdef const Steps *st = w.steps
    cdef int T = st.T, H = w.H, G = w.G, rev = w.rev, rows, s, t
    cdef const floating *b_ih = <const floating *>w.b_ih
    cdef const floating *b_hh = <const floating *>w.b_hh
    cdef floating *hs = <floating *>w.hs
    cdef floating *hn = <floating *>w.hn
    cdef floating *rh = <floating *>w.rh
    cdef floating *y = <floating *>w.y
    cdef floating *hproj = <floating *>w.hproj + <int64_t>b0 * G
    cdef floating *g
    cdef floating *h_prev
    cdef floating *h
    for s in range(T):
        if stop_requested(stop, part):
            break
        t = T - 1 - s if rev else s
        rows = active_rows(st, t, b0, b1)
        if rows <= 0:
            continue
        g, h_prev = &gates[step_at(st, t, b0, G)], &hs[slot_at(st, t + rev, b0, H)]
        h = &hs[slot_at(st, t + 1 - rev, b0, H)]
        if w.reset_after:
            # hproj[rows] = h_{t-1}[rows] @ w_hh.T
            step_matmul(w.w_hh, rows, h_prev, H, 0, hproj, G)
            gru_forward_step(rows, H, t, NULL, g, hproj, b_ih, b_hh, h_prev,
                             &hn[step_at(st, t, b0, H)], h, &y[step_at(st, t, b0, H)])
        else:
            # gates[t, rows, :2H] += h_{t-1}[rows] @ w_hh[:2H].T
            step_matmul(w.w_hh, rows, h_prev, H, 1, g, G)
            gru_forward_rz_step(rows, H, t, NULL, g, b_ih, b_hh, h_prev,
                                &rh[step_at(st, t, b0, H)])
            # gates[t, rows, 2H:] += (r * h_{t-1})[rows] @ w_hh[2H:].T
            step_matmul(w.w_hn, rows, &rh[step_at(st, t, b0, H)], H, 1, g + 2 * H, G)
            gru_forward_n_step(rows, H, t, NULL, g, b_ih, b_hh, h_prev, h,
                               &y[step_at(st, t, b0, H)])


cdef void backward_rows(GruWork *w, int b0, int b1, int part, Stop *stop,
                        floating *dgates) noexcept nogil:
    cdef const Steps *st = w.steps
    cdef int T = st.T, H = w.H, G = w.G, rev = w.rev, rows, s, t
    cdef const floating *gates = <const floating *>w.gates
    cdef const floating *hs = <const floating *>w.hs
    cdef const floating *hn = <const floating *>w.hn
    cdef const floating *dy = <const floating *>w.dy
    cdef floating *dn = <floating *>w.dn
    cdef floating *dh = <floating *>w.dh + <int64_t>b0 * H
    cdef double *dh_sq = NULL if w.dh_sq == NULL else w.dh_sq + <int64_t>part * T
    cdef floating *drh = <floating *>w.drh + <int64_t>b0 * H
    cdef const floating *g
    cdef const floating *h_prev
    cdef floating *dg
    for s in range(T):
        if stop_requested(stop, part):
            break
        t = s if rev else T - 1 - s
        rows = active_rows(st, t, b0, b1)
        if rows <= 0:
            continue
        record_state_grad(dh_sq, rows, H, t, NULL, &dy[step_at(st, t, b0, H)], dh)
        g, h_prev = &gates[step_at(st, t, b0, G)], &hs[slot_at(st, t + rev, b0, H)]
        dg = &dgates[step_at(st, t, b0, G)]
        if w.reset_after:
            gru_backward_step(rows, H, t, NULL, g, &hn[step_at(st, t, b0, H)], h_prev,
                              &dy[step_at(st, t, b0, H)], dh, dg, &dn[step_at(st, t, b0, H)])
            # dh[rows] += dgates[t, rows] @ w_hh
            step_matmul(w.w_hh, rows, dg, G, 1, dh, H)
        else:
            gru_backward_nz_step(rows, H, t, NULL, g, h_prev, &dy[step_at(st, t, b0, H)], dh, dg)
            # drh[rows] = dgates[t, rows, 2H:] @ w_hh[2H:]
            step_matmul(w.w_hn, rows, dg + 2 * H, G, 0, drh, H)
            gru_backward_r_step(rows, H, t, NULL, g, h_prev, drh, dh, dg)
            # dh[rows] += dgates[t, rows, :2H] @ w_hh[:2H]
            step_matmul(w.w_hh, rows, dg, G, 1, dh, H)


cdef void forward_part(void *cell, int b0, int b1, int part, Stop *stop) noexcept nogil:
    cdef GruWork *w = <GruWork *>cell
    if w.is_double:
        forward_rows(w, b0, b1, part, stop, <double *>w.gates)
    else:
        forward_rows(w, b0, b1, part, stop, <float *>w.gates)


cdef void backward_part(void *cell, int b0, int b1, int part, Stop *stop) noexcept nogil:
    cdef GruWork *w = <GruWork *>cell
    if w.is_double:
        backward_rows(w, b0, b1, part, stop, <double *>w.dgates)
    else:
        backward_rows(w, b0, b1, part, stop, <float *>w.dgates)


cdef class _Cache:
    """What backward needs from forward: the pass's buffers and its inputs (not copied), and
    what forward got with its checked sizes, which backward checks its arguments against."""
    cdef tuple inputs, sizes  # (x, w_ih, w_hh, w_hr, lengths); (dtype, T, B, D, H, G, Hh)
    cdef object x, w_ih, w_hh, gates, hs, hn_or_rh
    cdef Layout layout
    cdef bint reset_after


cdef void init_work(GruWork *w, bint is_double, int H, Layout lay, bint reset_after) noexcept:
    """The sizes and options of `w`, with every buffer pointer NULL."""
    memset(w, 0, sizeof(GruWork))
    w.is_double, w.reset_after = is_double, reset_after
    w.H, w.G, w.rev, w.steps = H, 3 * H, lay.reverse, &lay.steps


def forward(x, state0, params, lengths, reverse, reset_after=True, keep=True):
    """GRU forward over one direction of one layer -> (y, (h_n,), cache).

    Parameters and returns as the cell contract of fastrnn/_backends.py (docs/layers.md); without
    `keep`, cache is None. Every argument is checked against the weights' sizes first
    (TypeError/ValueError)."""
    if not isinstance(reset_after, (bool, np.bool_)):
        raise TypeError(f"reset_after must be a bool, got {type(reset_after).__name__}")
    sizes = check_forward("GRU", x, state0, 1, params, lengths, (3,))
    cdef _Cache cache = _Cache.__new__(_Cache)
    cache.inputs, cache.sizes = (x, params["w_ih"], params["w_hh"], None, lengths), sizes
    cdef Layout lay = layout(lengths, x.shape[0], x.shape[1], reverse)
    cache.layout, cache.reset_after = lay, reset_after
    cache.x, cache.w_ih, cache.w_hh = lay.pack(x), params["w_ih"], params["w_hh"]
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
    cdef bint reset_after = cache.reset_after
    cdef int R = lay.rows, D = x.shape[1], H = w_hh.shape[1], G = 3 * H
    cdef int T = lay.steps.T, B = lay.steps.B
    cdef GruWork work
    cdef Scan scan
    dtype = np.float32 if floating is float else np.float64
    # Kept for backward: the activated gates, the h sequence and per step either
    # hn = W_hn h_{t-1} + b_hn (reset_after) or r * h_{t-1} (and the initial state).
    cache.gates = empty((R, G), dtype)
    cache.hn_or_rh = empty((R, H), dtype)
    if not reset_after:
        lay.zero_unused(cache.hn_or_rh)  # the W_hn gradient reads it
    y_array = empty((R, H), dtype)
    hproj_array = empty((B, G), dtype)
    cdef floating[:, ::1] gates = cache.gates, hs = cache.hs, hn_or_rh = cache.hn_or_rh
    cdef floating[:, ::1] y = y_array, hproj = hproj_array
    cdef floating[::1] panels = step_panels(H, G if reset_after else 2 * H, dtype, T, B)
    cdef floating[::1] panels_n = None if reset_after else step_panels(H, H, dtype, T, B)
    cdef floating[::1] panels_ih = product_panels(R, D, G, dtype)

    init_scan(&scan, floating is double, True, lay, forward_part, &work)
    init_work(&work, floating is double, H, lay, reset_after)
    if reset_after:
        # per step: @ w_hh.T
        work.w_hh = add_operand(&scan, H, G, &w_hh[0, 0], H, True, panels_ptr(panels))
        work.hn, work.hproj = &hn_or_rh[0, 0], &hproj[0, 0]
    else:
        # per step: @ w_hh[:2H].T, then (r * h_{t-1}) @ w_hh[2H:].T
        work.w_hh = add_operand(&scan, H, 2 * H, &w_hh[0, 0], H, True, panels_ptr(panels))
        work.w_hn = add_operand(&scan, H, H, &w_hh[2 * H, 0], H, True, panels_ptr(panels_n))
        work.rh = &hn_or_rh[0, 0]
    work.b_ih, work.b_hh = bias_ptr(b_ih), bias_ptr(b_hh)
    work.gates, work.hs, work.y = &gates[0, 0], &hs[0, 0], &y[0, 0]
    # gates = x @ w_ih.T
    input_projection(&scan.products, R, D, G, &x[0, 0], &w_ih[0, 0], &gates[0, 0], G,
                     panels_ptr(panels_ih))
    run_scan(&scan, <int64_t>R * G * (D + H))
    return y_array


def backward(dy, dstate_n, cache, grads, norms=None):
    """GRU backward through one forward call -> (dx, (dh0,)); adds into `grads`.

    Parameters and returns as the cell contract of fastrnn/_backends.py (docs/layers.md),
    `norms` ((1, T) float64 or None) included; every argument is checked against the sizes of the
    forward call first (TypeError/ValueError)."""
    cdef _Cache c = check_cache(cache, _Cache)
    dtype, T, B, D, H, G, Hh = c.sizes
    check_backward("GRU", dy, dstate_n, 1, grads, c.inputs, dtype, T, B, D, H, G, Hh, norms)
    cdef Layout lay = c.layout
    dh = lay.sort(dstate_n[0])
    # Per-thread rows of squared norms, summed after the pass: no two threads share a row.
    sq = None if norms is None else np.zeros((MAX_PARTS, dy.shape[0]))
    if dy.dtype == np.float32:
        dx = _backward[float](lay.pack(dy), dh, c.x, c.w_ih, c.w_hh, lay, c.gates, c.hs,
                              c.hn_or_rh, c.reset_after, grads["w_ih"], grads["w_hh"],
                              grads["b_ih"], grads["b_hh"], sq)
    else:
        dx = _backward[double](lay.pack(dy), dh, c.x, c.w_ih, c.w_hh, lay, c.gates, c.hs,
                               c.hn_or_rh, c.reset_after, grads["w_ih"], grads["w_hh"],
                               grads["b_ih"], grads["b_hh"], sq)
    if norms is not None:
        np.sqrt(sq.sum(axis=0), out=norms[0])
    return lay.unpack(dx), (lay.unsort(dh),)


def gate_activations(cache):
    """The activated gates of the forward that made `cache`: (T, 3, B, H), rows r, z, n; the
    contract in fastrnn/_backends.py."""
    cdef _Cache c = check_cache(cache, _Cache)
    gates = c.layout.unpack(c.gates)
    T, B, G = gates.shape
    return gates.reshape(T, B, 3, G // 3).transpose(0, 2, 1, 3).copy()


cdef object _backward(const floating[:, ::1] dy, floating[:, ::1] dh,
                      const floating[:, ::1] x, const floating[:, ::1] w_ih,
                      const floating[:, ::1] w_hh, Layout lay, const floating[:, ::1] gates,
                      const floating[:, ::1] hs, const floating[:, ::1] hn_or_rh,
                      bint reset_after, floating[:, ::1] dw_ih, floating[:, ::1] dw_hh,
                      floating[::1] db_ih, floating[::1] db_hh, double[:, ::1] sq):
    """The time loop and the products of backward on the packed dy, from dh (the final state
    gradient, sorted; left as that of the initial state); returns the packed dx."""
    cdef int R = lay.rows, D = x.shape[1], H = hs.shape[1], G = 3 * H
    cdef int T = lay.steps.T, B = lay.steps.B
    cdef int64_t rows = R
    cdef const floating *h_prev = &hs[0, 0] + slot_at(&lay.steps, lay.reverse, 0, H)
    cdef GruWork work
    cdef Scan scan
    cdef Products *products = &scan.products
    dtype = np.float32 if floating is float else np.float64
    dx_array = empty((R, D), dtype)
    # reset_after: the r, z, hn gradients (what W_hh sees) and dn, the n gradient (what W_ih
    # sees); otherwise the r, z, n gradients, which both see, and a per-step d(r * h_{t-1}).
    dgates_array = empty((R, G), dtype)
    dn_array = empty((R if reset_after else B, H), dtype)
    lay.zero_unused(dgates_array)
    if reset_after:
        lay.zero_unused(dn_array)
    cdef floating[:, ::1] dx = dx_array, dgates = dgates_array, dn = dn_array
    cdef double[:, ::1] dbias = np.zeros((MAX_PARTS, G))  # see ColumnSum
    cdef double[:, ::1] dbias_n = np.zeros((MAX_PARTS, H))
    cdef floating[::1] panels = step_panels(G if reset_after else 2 * H, H, dtype, T, B)
    cdef floating[::1] panels_n = None if reset_after else step_panels(H, H, dtype, T, B)
    # dx: @ w_ih (reset_after: @ w_ih[:2H] and @ w_ih[2H:])
    cdef floating[::1] panels_ih = product_panels(R, 2 * H if reset_after else G, D, dtype)
    cdef floating[::1] panels_n_ih = product_panels(R, H, D, dtype) if reset_after else None

    init_scan(&scan, floating is double, False, lay, backward_part, &work)
    init_work(&work, floating is double, H, lay, reset_after)
    if reset_after:
        # per step: @ w_hh
        work.w_hh = add_operand(&scan, G, H, &w_hh[0, 0], H, False, panels_ptr(panels))
        work.hn, work.dn = <void *>&hn_or_rh[0, 0], &dn[0, 0]
    else:
        # per step: @ w_hh[:2H] and, for d(r * h_{t-1}), @ w_hh[2H:]
        work.w_hh = add_operand(&scan, 2 * H, H, &w_hh[0, 0], H, False, panels_ptr(panels))
        work.w_hn = add_operand(&scan, H, H, &w_hh[2 * H, 0], H, False, panels_ptr(panels_n))
        work.drh = &dn[0, 0]  # one step
    work.gates, work.hs, work.dy = <void *>&gates[0, 0], <void *>&hs[0, 0], &dy[0, 0]
    work.dgates, work.dh = &dgates[0, 0], &dh[0, 0]
    work.dh_sq = NULL if sq is None else &sq[0, 0]
    if reset_after:
        # dx = dgates[..., :2H] @ w_ih[:2H] + dn @ w_ih[2H:]
        product(products, False, False, R, D, 2 * H, &dgates[0, 0], G, &w_ih[0, 0], D,
                False, &dx[0, 0], D)
        pack_last(products, panels_ptr(panels_ih))
        product(products, False, False, R, D, H, &dn[0, 0], H, &w_ih[2 * H, 0], D, True,
                &dx[0, 0], D)
        pack_last(products, panels_ptr(panels_n_ih))
        # dw_ih[:2H] += dgates[..., :2H].T @ x; dw_ih[2H:] += dn.T @ x
        product(products, True, False, 2 * H, D, R, &dgates[0, 0], G, &x[0, 0], D,
                True, &dw_ih[0, 0], D)
        product(products, True, False, H, D, R, &dn[0, 0], H, &x[0, 0], D, True,
                &dw_ih[2 * H, 0], D)
        # dw_hh += dgates.T @ h_{t-1}
        product(products, True, False, G, H, R, &dgates[0, 0], G, h_prev, H,
                True, &dw_hh[0, 0], H)
        if db_ih is not None:
            # dbias = dgates.sum((0, 1)); dbias_n = dn.sum((0, 1))
            column_sum(products, rows, G, &dgates[0, 0], G, &dbias[0, 0])
            column_sum(products, rows, H, &dn[0, 0], H, &dbias_n[0, 0])
    else:
        # dx = dgates @ w_ih; dw_ih += dgates.T @ x
        input_gradient_products(products, R, D, G, &dgates[0, 0], &w_ih[0, 0],
                                &x[0, 0], &dx[0, 0], &dw_ih[0, 0], panels_ptr(panels_ih))
        # dw_hh[:2H] += dgates[..., :2H].T @ h_{t-1}; dw_hh[2H:] += dgates[..., 2H:].T @ rh
        product(products, True, False, 2 * H, H, R, &dgates[0, 0], G, h_prev, H,
                True, &dw_hh[0, 0], H)
        product(products, True, False, H, H, R, &dgates[0, 2 * H], G,
                &hn_or_rh[0, 0], H, True, &dw_hh[2 * H, 0], H)
        if db_ih is not None:
            # dbias = dgates.sum((0, 1))
            column_sum(products, rows, G, &dgates[0, 0], G, &dbias[0, 0])

    run_scan(&scan, rows * G * (D + H))
    if db_ih is not None:
        # db_hh += dbias; db_ih += dbias (reset_after: its r, z part, then dbias_n)
        add_to(&db_hh[0], &dbias[0, 0], G)
        if reset_after:
            add_to(&db_ih[0], &dbias[0, 0], 2 * H)
            add_to(&db_ih[2 * H], &dbias_n[0, 0], H)
        else:
            add_to(&db_ih[0], &dbias[0, 0], G)
    return dx_array
