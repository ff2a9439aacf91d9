"""Compiled LSTM, one direction of one layer (fastrnn/reference/lstm.py and lstm_nf.py in C):
`forward` and `backward` implement the cell contract of docs/layers.md (fastrnn/_backends.py).

The gate rows are i, f, g, o (G = 4), or i, g, o (G = 3) for the cell without forget gate of
Hochreiter & Schmidhuber 1997 (docs/math.md); the parameters' shapes say which. Buffers and
passes as in scan.pyx.

With a projection w_hr (Hh, H) (torch's proj_size = Hh < H), h_t = W_hr r_t, r_t = o ⊙ tanh(c_t):
h, y and W_hh's columns have Hh values, c has H. The gate kernels are the same: they write r
where they write h, and one more per-step product makes h of it (forward) or takes dL/dr from
dL/dh (backward); W_hr's gradient is one product over all steps, from r and dL/dh kept per step.
"""
import numpy as np

from cython cimport floating
from libc.stdint cimport int64_t
from libc.string cimport memcpy, memset

from fastrnn._kernels.buffers cimport empty
from fastrnn._kernels.norms cimport record_state_grad
from fastrnn._kernels.products cimport (Operand, add_to, panels_ptr, product, product_panels,
                                        step_matmul, step_panels)
from fastrnn._kernels.scan cimport (Scan, Stop, add_operand, at, bias_ptr, check_array,
                                    check_backward, check_cache, check_forward, copy_state,
                                    gate_gradient_products, init_scan, input_projection,
                                    lengths_from, lengths_ptr, run_scan, stop_requested)
from fastrnn._kernels.threads cimport MAX_PARTS


cdef struct LstmWork:
    # What the time loop of a pass reads and writes; a thread handles batch rows b0 .. b1-1 of
    # everything per-row. The forward buffers (gates .. y) are written by forward and only read
    # by backward.
    bint is_double, forget_gate
    bint keep  # False: hs and cs hold two states, the one before and the one after the step
    int T, B, H, G, P, rev  # P: peephole rows, 3 (i, f, o) or 2 (i, o)
    int Hh               # the size of h: H, or the projection's rows
    const int64_t *lengths
    const Operand *w_hh  # the right operand of the per-step product
    const Operand *w_hr  # the projection's per-step operand, or NULL (no projection)
    const void *b_ih
    const void *b_hh
    const void *w_peep   # (P, H), zeros without peepholes
    void *gates          # (T, B, G*H)
    void *hs             # (T+1, B, Hh), or (2, B, Hh) when not keep
    void *cs             # (T+1, B, H), or (2, B, H) when not keep
    void *y              # (T, B, Hh)
    void *rs             # (T, B, H) r_t, with a projection
    void *zeros          # (B, H) zeros, with a projection (see forward_rows, backward_rows)
    void *scratch        # (B, H), with a projection: forward, the gate kernel's unread y;
                         # backward, dL/dr_t of the step
    const void *dy       # (T, B, Hh)
    void *dhs            # (T, B, Hh) dL/dh_t, with a projection
    void *dgates         # (T, B, G*H)
    void *dh             # (B, Hh)
    void *dc             # (B, H)
    double *dpeep        # (MAX_PARTS, P*H) accumulators, one per thread, or NULL
    double *dh_sq        # (MAX_PARTS, T) squared norms of dL/dh_t, one row per thread, or NULL
    double *dc_sq        # (MAX_PARTS, T) the same for dL/dc_t, or NULL (no record)


cdef void project_state(int rows, int Hh, int64_t t, const int64_t *lengths, const floating *y,
                        const floating *h_prev, floating *h) noexcept nogil:
    """h = y (the projected r) on the rows valid at step t, h_prev on the others."""
    cdef int b
    if lengths == NULL:
        memcpy(h, y, <size_t>rows * Hh * sizeof(floating))
        return
    for b in range(rows):
        memcpy(&h[<int64_t>b * Hh], &y[<int64_t>b * Hh] if t < lengths[b] else
               &h_prev[<int64_t>b * Hh], Hh * sizeof(floating))


cdef void output_gradient(int rows, int Hh, int64_t t, const int64_t *lengths,
                          const floating *dy, floating *dh, floating *dh_t) noexcept nogil:
    """dh_t = dL/dh_t = dy + dh on the rows valid at step t, where dh then restarts from zero;
    zero on the others, whose dh passes to the step before unchanged (h_t = h_{t-1})."""
    cdef int b, j
    cdef int64_t row
    for b in range(rows):
        row = <int64_t>b * Hh
        if lengths == NULL or t < lengths[b]:
            for j in range(Hh):
                dh_t[row + j] = dy[row + j] + dh[row + j]
                dh[row + j] = 0
        else:
            memset(&dh_t[row], 0, Hh * sizeof(floating))


cdef void forward_rows(LstmWork *w, int b0, int b1, int part, Stop *stop,
                        floating *gates) noexcept nogil:
    cdef int T = w.T, B = w.B, H = w.H, G = w.G, Hh = w.Hh, rev = w.rev, rows = b1 - b0, s, t
    cdef int before, after  # the slots of hs and cs of the states before and after step t
    cdef const int64_t *lengths = lengths_from(w.lengths, b0)
    cdef floating *hs = <floating *>w.hs
    cdef floating *cs = <floating *>w.cs
    cdef floating *y = <floating *>w.y
    cdef floating *rs = <floating *>w.rs
    cdef floating *zeros = <floating *>w.zeros + <int64_t>b0 * H
    cdef floating *scratch = <floating *>w.scratch + <int64_t>b0 * H
    for s in range(T):
        if stop_requested(stop, part):
            break
        t = T - 1 - s if rev else s
        if w.keep:
            before, after = t + rev, t + 1 - rev
        else:
            before, after = s & 1, (s + 1) & 1
        # gates[t, rows] += hs[before, rows] @ w_hh.T
        step_matmul(w.w_hh, rows, &hs[at(before, b0, B, Hh)], Hh, 1, &gates[at(t, b0, B, G)], G)
        if w.w_hr == NULL:
            lstm_forward_step(w.forget_gate, rows, H, t, lengths, &gates[at(t, b0, B, G)],
                              <const floating *>w.b_ih, <const floating *>w.b_hh,
                              <const floating *>w.w_peep, &hs[at(before, b0, B, H)],
                              &cs[at(before, b0, B, H)], &hs[at(after, b0, B, H)],
                              &cs[at(after, b0, B, H)], &y[at(t, b0, B, H)])
            continue
        # The gate kernel writes r_t where it writes h; a row past its length carries the
        # zeros as its "h", so its r_t is zero and so is its y[t] = r_t @ w_hr.T.
        lstm_forward_step(w.forget_gate, rows, H, t, lengths, &gates[at(t, b0, B, G)],
                          <const floating *>w.b_ih, <const floating *>w.b_hh,
                          <const floating *>w.w_peep, zeros, &cs[at(before, b0, B, H)],
                          &rs[at(t, b0, B, H)], &cs[at(after, b0, B, H)], scratch)
        # y[t, rows] = rs[t, rows] @ w_hr.T
        step_matmul(w.w_hr, rows, &rs[at(t, b0, B, H)], H, 0, &y[at(t, b0, B, Hh)], Hh)
        project_state(rows, Hh, t, lengths, &y[at(t, b0, B, Hh)], &hs[at(before, b0, B, Hh)],
                      &hs[at(after, b0, B, Hh)])


cdef void backward_rows(LstmWork *w, int b0, int b1, int part, Stop *stop,
                        floating *dgates) noexcept nogil:
    cdef int T = w.T, B = w.B, H = w.H, G = w.G, Hh = w.Hh, rev = w.rev, rows = b1 - b0, s, t
    cdef const int64_t *lengths = lengths_from(w.lengths, b0)
    cdef const floating *gates = <const floating *>w.gates
    cdef const floating *cs = <const floating *>w.cs
    cdef const floating *dy = <const floating *>w.dy
    cdef floating *dh = <floating *>w.dh + <int64_t>b0 * Hh
    cdef floating *dc = <floating *>w.dc + <int64_t>b0 * H
    cdef floating *dhs = <floating *>w.dhs
    cdef floating *zeros = <floating *>w.zeros + <int64_t>b0 * H
    cdef floating *dr = <floating *>w.scratch + <int64_t>b0 * H
    cdef double *dpeep = NULL if w.dpeep == NULL else w.dpeep + <int64_t>part * w.P * H
    cdef double *dh_sq = NULL if w.dh_sq == NULL else w.dh_sq + <int64_t>part * T
    cdef double *dc_sq = NULL if w.dc_sq == NULL else w.dc_sq + <int64_t>part * T
    for s in range(T):
        if stop_requested(stop, part):
            break
        t = s if rev else T - 1 - s
        # ||dL/dh_t||^2 of the rows valid at step t: dy[t] plus what step t+1 passed back
        record_state_grad(dh_sq, rows, Hh, t, lengths, &dy[at(t, b0, B, Hh)], dh)
        if w.w_hr == NULL:
            lstm_backward_step(w.forget_gate, rows, H, t, lengths, &gates[at(t, b0, B, G)],
                               &cs[at(t + rev, b0, B, H)], &cs[at(t + 1 - rev, b0, B, H)],
                               <const floating *>w.w_peep, &dy[at(t, b0, B, H)], dh, dc,
                               &dgates[at(t, b0, B, G)], dpeep, NULL if dc_sq == NULL else dc_sq + t)
        else:
            # dr = dL/dr_t = dhs[t, rows] @ w_hr, the gate kernel's "dy"; its dh stays zeros
            output_gradient(rows, Hh, t, lengths, &dy[at(t, b0, B, Hh)], dh,
                            &dhs[at(t, b0, B, Hh)])
            step_matmul(w.w_hr, rows, &dhs[at(t, b0, B, Hh)], Hh, 0, dr, H)
            lstm_backward_step(w.forget_gate, rows, H, t, lengths, &gates[at(t, b0, B, G)],
                               &cs[at(t + rev, b0, B, H)], &cs[at(t + 1 - rev, b0, B, H)],
                               <const floating *>w.w_peep, dr, zeros, dc,
                               &dgates[at(t, b0, B, G)], dpeep, NULL if dc_sq == NULL else dc_sq + t)
        # dh[rows] += dgates[t, rows] @ w_hh
        step_matmul(w.w_hh, rows, &dgates[at(t, b0, B, G)], G, 1, dh, Hh)


cdef void forward_part(void *cell, int b0, int b1, int part, Stop *stop) noexcept nogil:
    cdef LstmWork *w = <LstmWork *>cell
    if w.is_double:
        forward_rows(w, b0, b1, part, stop, <double *>w.gates)
    else:
        forward_rows(w, b0, b1, part, stop, <float *>w.gates)


cdef void backward_part(void *cell, int b0, int b1, int part, Stop *stop) noexcept nogil:
    cdef LstmWork *w = <LstmWork *>cell
    if w.is_double:
        backward_rows(w, b0, b1, part, stop, <double *>w.dgates)
    else:
        backward_rows(w, b0, b1, part, stop, <float *>w.dgates)


cdef class _Cache:
    """What backward needs from forward: the pass's buffers and its inputs (not copied), and the
    sizes they were checked against."""
    cdef object x, w_ih, w_hh, w_peep, w_hr, lengths, gates, hs, cs, rs, dtype
    cdef int64_t T, B, D, H, G, Hh
    cdef bint reverse


def forward(x, state0, params, lengths, reverse, keep=True):
    """LSTM forward over one direction of one layer -> (y, (h_n, c_n), cache).

    Parameters and returns as the cell contract of fastrnn/_backends.py (docs/layers.md); the
    cell has no forget gate when w_ih has 3H rows (gates i, g, o, w_peep (2, H)). With
    params["w_hr"] (P, H) (optional key), h is projected: h0, h_n and y have P columns. Without
    `keep` the states of only two steps are held at a time and cache is None. Every argument is
    checked against the weights' sizes first (TypeError/ValueError)."""
    dtype, T, B, D, H, G, Hh = check_forward("LSTM", x, state0, 2, params, lengths, (4, 3), True)
    w_hh = params["w_hh"]
    peephole_shape = (G // H - 1, H)
    w_peep = params.get("w_peep")
    if w_peep is None:
        w_peep = np.zeros(peephole_shape, dtype)
    check_array("params['w_peep']", w_peep, dtype, peephole_shape)
    cdef _Cache cache = None
    if keep:
        cache = _Cache.__new__(_Cache)
        cache.dtype, cache.T, cache.B, cache.D = dtype, T, B, D
        cache.H, cache.G, cache.Hh = H, G, Hh
    if x.dtype == np.float32:
        y, state_n = _forward[float](x, state0[0], state0[1], params["w_ih"], w_hh,
                                     params["b_ih"], params["b_hh"], w_peep, params.get("w_hr"),
                                     lengths, reverse, cache)
    else:
        y, state_n = _forward[double](x, state0[0], state0[1], params["w_ih"], w_hh,
                                      params["b_ih"], params["b_hh"], w_peep, params.get("w_hr"),
                                      lengths, reverse, cache)
    return y, state_n, cache


cdef tuple _forward(const floating[:, :, ::1] x, const floating[:, ::1] h0,
                    const floating[:, ::1] c0, const floating[:, ::1] w_ih,
                    const floating[:, ::1] w_hh, const floating[::1] b_ih,
                    const floating[::1] b_hh, const floating[:, ::1] w_peep,
                    const floating[:, ::1] w_hr, const int64_t[::1] lengths, bint reverse,
                    _Cache cache):
    cdef int64_t T = x.shape[0], B = x.shape[1], D = x.shape[2], H = c0.shape[1]
    cdef int64_t G = w_ih.shape[0], Hh = h0.shape[1], rows = T * B
    cdef int64_t first, last  # the slots of the initial and final state
    cdef int rev = reverse
    cdef bint keep = cache is not None
    cdef LstmWork work
    cdef Scan scan
    dtype = np.float32 if floating is float else np.float64
    # Kept for backward: the activated gates and the h and c sequences (and the initial state).
    gates_array = empty((T, B, G), dtype)
    hs_array = empty((T + 1 if keep else 2, B, Hh), dtype)
    cs_array = empty((T + 1 if keep else 2, B, H), dtype)
    first, last = rev * T, (1 - rev) * T
    if not keep:
        first, last = 0, T & 1
    y_array = empty((T, B, Hh), dtype)
    h_n_array = empty((B, Hh), dtype)
    c_n_array = empty((B, H), dtype)
    cdef floating[:, :, ::1] gates = gates_array, hs = hs_array, cs = cs_array, y = y_array
    cdef floating[:, ::1] h_n = h_n_array, c_n = c_n_array
    cdef floating[::1] panels = step_panels(Hh, G, dtype, T, B)
    cdef floating[::1] panels_ih = product_panels(rows, D, G, dtype)

    memset(&work, 0, sizeof(LstmWork))
    init_scan(&scan, floating is double, True, B, forward_part, &work)
    work.is_double, work.forget_gate, work.keep = floating is double, G == 4 * H, keep
    work.T, work.B, work.H, work.G, work.P, work.rev = T, B, H, G, w_peep.shape[0], rev
    work.Hh = Hh
    work.lengths = lengths_ptr(lengths)
    # per step: @ w_hh.T
    work.w_hh = add_operand(&scan, Hh, G, &w_hh[0, 0], Hh, True, panels_ptr(panels))
    projection = None if w_hr is None else _projection(&scan, &work, w_hr, True)
    work.w_peep = &w_peep[0, 0]
    work.b_ih, work.b_hh = bias_ptr(b_ih), bias_ptr(b_hh)
    work.gates, work.hs, work.cs, work.y = &gates[0, 0, 0], &hs[0, 0, 0], &cs[0, 0, 0], &y[0, 0, 0]
    # gates = x @ w_ih.T
    input_projection(&scan.products, rows, D, G, &x[0, 0, 0], &w_ih[0, 0], &gates[0, 0, 0], G,
                     panels_ptr(panels_ih))

    copy_state(&hs[first, 0, 0], &h0[0, 0], B, Hh)
    copy_state(&cs[first, 0, 0], &c0[0, 0], B, H)
    run_scan(&scan, rows * (G * (D + Hh) + (0 if w_hr is None else H * Hh)))
    copy_state(&h_n[0, 0], &hs[last, 0, 0], B, Hh)
    copy_state(&c_n[0, 0], &cs[last, 0, 0], B, H)
    if not keep:
        return y_array, (h_n_array, c_n_array)
    cache.x, cache.w_ih, cache.w_hh, cache.w_peep = x.base, w_ih.base, w_hh.base, w_peep.base
    cache.w_hr = None if w_hr is None else w_hr.base
    cache.lengths = None if lengths is None else lengths.base
    cache.gates, cache.hs, cache.cs, cache.reverse = gates_array, hs_array, cs_array, reverse
    cache.rs = None if projection is None else projection[0]
    return y_array, (h_n_array, c_n_array)


def backward(dy, dstate_n, cache, grads, norms=None):
    """LSTM backward through one forward call -> (dx, (dh0, dc0)); adds into `grads`.

    Parameters and returns as the cell contract of fastrnn/_backends.py (docs/layers.md),
    `norms` ((2, T) float64 or None) included; every argument is checked against the sizes of
    the forward call first (TypeError/ValueError)."""
    cdef _Cache c = check_cache(cache, _Cache)
    check_backward("LSTM", dy, dstate_n, 2, grads, (c.x, c.w_ih, c.w_hh, c.w_hr, c.lengths),
                   c.dtype, c.T, c.B, c.D, c.H, c.G, c.Hh, norms)
    peephole_shape = (c.G // c.H - 1, c.H)
    check_array("params['w_peep'] (kept from forward)", c.w_peep, c.dtype, peephole_shape)
    if grads.get("w_peep") is not None:
        check_array("grads['w_peep']", grads["w_peep"], c.dtype, peephole_shape, True)
    # Per-thread rows of squared norms, summed after the pass: no two threads share a row.
    sq = None if norms is None else np.zeros((2, MAX_PARTS, dy.shape[0]))
    if dy.dtype == np.float32:
        result = _backward[float](dy, dstate_n[0], dstate_n[1], c.x, c.w_ih, c.w_hh, c.w_peep,
                                  c.w_hr, c.lengths, c.gates, c.hs, c.cs, c.rs, c.reverse,
                                  grads["w_ih"], grads["w_hh"], grads["b_ih"], grads["b_hh"],
                                  grads.get("w_peep"), grads.get("w_hr"), sq)
    else:
        result = _backward[double](dy, dstate_n[0], dstate_n[1], c.x, c.w_ih, c.w_hh, c.w_peep,
                                   c.w_hr, c.lengths, c.gates, c.hs, c.cs, c.rs, c.reverse,
                                   grads["w_ih"], grads["w_hh"], grads["b_ih"], grads["b_hh"],
                                   grads.get("w_peep"), grads.get("w_hr"), sq)
    if norms is not None:
        np.sqrt(sq.sum(axis=1), out=norms)
    return result


def gate_activations(cache):
    """The activated gates of the forward that made `cache`: (T, G, B, H), rows of G in the
    cell spec's gate order (i, f, g, o or i, g, o); the contract in fastrnn/_backends.py."""
    cdef _Cache c = check_cache(cache, _Cache)
    T, B, GH = c.gates.shape
    H = c.cs.shape[2]
    return c.gates.reshape(T, B, GH // H, H).transpose(0, 2, 1, 3).copy()


cdef tuple _backward(const floating[:, :, ::1] dy, const floating[:, ::1] dh_n,
                     const floating[:, ::1] dc_n, const floating[:, :, ::1] x,
                     const floating[:, ::1] w_ih, const floating[:, ::1] w_hh,
                     const floating[:, ::1] w_peep, const floating[:, ::1] w_hr,
                     const int64_t[::1] lengths, const floating[:, :, ::1] gates,
                     const floating[:, :, ::1] hs, const floating[:, :, ::1] cs,
                     const floating[:, :, ::1] rs, bint reverse,
                     floating[:, ::1] dw_ih, floating[:, ::1] dw_hh, floating[::1] db_ih,
                     floating[::1] db_hh, floating[:, ::1] dw_peep, floating[:, ::1] dw_hr,
                     double[:, :, ::1] sq):
    cdef int64_t T = x.shape[0], B = x.shape[1], D = x.shape[2], H = cs.shape[2]
    cdef int64_t G = w_ih.shape[0], Hh = hs.shape[2], rows = T * B
    cdef int P = w_peep.shape[0], rev = reverse, part
    cdef LstmWork work
    cdef Scan scan
    dtype = np.float32 if floating is float else np.float64
    dx_array = empty((T, B, D), dtype)
    dgates_array = empty((T, B, G), dtype)
    dh_array = empty((B, Hh), dtype)
    dc_array = empty((B, H), dtype)
    cdef floating[:, :, ::1] dx = dx_array, dgates = dgates_array
    cdef floating[:, ::1] dh = dh_array, dc = dc_array
    cdef double[:, ::1] dbias = np.zeros((MAX_PARTS, G))  # see ColumnSum
    cdef double[:, ::1] dpeep = np.zeros((MAX_PARTS, P * H))  # one accumulator per thread
    cdef floating[::1] panels = step_panels(G, Hh, dtype, T, B)
    cdef floating[::1] panels_ih = product_panels(rows, G, D, dtype)
    cdef floating[:, :, ::1] dhs = None

    memset(&work, 0, sizeof(LstmWork))
    init_scan(&scan, floating is double, False, B, backward_part, &work)
    work.is_double, work.forget_gate = floating is double, G == 4 * H
    work.T, work.B, work.H, work.G, work.P, work.rev = T, B, H, G, P, rev
    work.Hh = Hh
    work.lengths = lengths_ptr(lengths)
    # per step: @ w_hh
    work.w_hh = add_operand(&scan, G, Hh, &w_hh[0, 0], Hh, False, panels_ptr(panels))
    projection = None if w_hr is None else _projection(&scan, &work, w_hr, False)
    if projection is not None:
        dhs = projection[0]
    work.w_peep = &w_peep[0, 0]
    work.gates, work.cs, work.dy = <void *>&gates[0, 0, 0], <void *>&cs[0, 0, 0], &dy[0, 0, 0]
    work.dgates, work.dh, work.dc = &dgates[0, 0, 0], &dh[0, 0], &dc[0, 0]
    work.dpeep = NULL if dw_peep is None else &dpeep[0, 0]
    if sq is not None:
        work.dh_sq, work.dc_sq = &sq[0, 0, 0], &sq[1, 0, 0]
    # dx = dgates @ w_ih; dw_ih += dgates.T @ x; dw_hh += dgates.T @ hs[rev:rev + T];
    # dbias = dgates.sum((0, 1))
    gate_gradient_products(&scan.products, rows, D, Hh, G, &dgates[0, 0, 0], &w_ih[0, 0],
                           &x[0, 0, 0], &hs[rev, 0, 0], &dx[0, 0, 0], &dw_ih[0, 0], &dw_hh[0, 0],
                           NULL if db_ih is None else &dbias[0, 0], panels_ptr(panels_ih))
    if w_hr is not None:
        # dw_hr += dhs.T @ rs, h_t = W_hr r_t over all steps
        product(&scan.products, True, False, Hh, H, rows, &dhs[0, 0, 0], Hh, &rs[0, 0, 0], H,
                True, &dw_hr[0, 0], H)

    copy_state(&dh[0, 0], &dh_n[0, 0], B, Hh)
    copy_state(&dc[0, 0], &dc_n[0, 0], B, H)
    run_scan(&scan, rows * (G * (D + Hh) + (0 if w_hr is None else 2 * H * Hh)))
    if db_ih is not None:
        add_to(&db_ih[0], &dbias[0, 0], G)
        add_to(&db_hh[0], &dbias[0, 0], G)
    if dw_peep is not None:
        for part in range(MAX_PARTS):  # the rows of threads that did not run are zeros
            add_to(&dw_peep[0, 0], &dpeep[part, 0], P * H)
    return dx_array, (dh_array, dc_array)


cdef tuple _projection(Scan *scan, LstmWork *work, const floating[:, ::1] w_hr, bint forward):
    """Give a pass of `work` a projection w_hr (Hh, H): its per-step operand (forward @ w_hr.T,
    backward @ w_hr) and buffers. Returns them, to be kept until the pass has run; the first is
    the per-step buffer the pass fills (r_t forward, dL/dh_t backward)."""
    cdef int T = work.T, B = work.B, H = work.H, Hh = work.Hh
    dtype = np.float32 if floating is float else np.float64
    cdef floating[:, :, ::1] per_step = empty((T, B, H if forward else Hh), dtype)
    cdef floating[:, ::1] zeros = np.zeros((B, H), dtype), scratch = empty((B, H), dtype)
    cdef floating[::1] panels = (step_panels(H, Hh, dtype, work.T, work.B) if forward
                                  else step_panels(Hh, H, dtype, work.T, work.B))
    if forward:
        work.w_hr = add_operand(scan, H, Hh, &w_hr[0, 0], H, True, panels_ptr(panels))
        work.rs = &per_step[0, 0, 0]
    else:
        work.w_hr = add_operand(scan, Hh, H, &w_hr[0, 0], H, False, panels_ptr(panels))
        work.dhs = &per_step[0, 0, 0]
    work.zeros, work.scratch = &zeros[0, 0], &scratch[0, 0]
    return per_step.base, zeros.base, scratch.base, None if panels is None else panels.base
