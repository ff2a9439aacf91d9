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
from fastrnn._kernels.scan cimport (Layout, Scan, Steps, Stop, active_rows, add_operand, bias_ptr,
                                    check_array, check_backward, check_cache, check_forward,
                                    gate_gradient_products, init_scan, input_projection, layout,
                                    run_scan, slot_at, step_at, stop_requested)
from fastrnn._kernels.threads cimport MAX_PARTS


cdef struct LstmWork:
    # What the time loop of a pass reads and writes; a thread handles batch rows b0 .. b1-1 of
    # everything per-row. The forward buffers (gates .. y) are written by forward and only read
    # by backward.
    bint is_double, forget_gate
    bint keep  # False: hs and cs hold two slots, the state before and the state after the step
    int H, G, P, rev  # P: peephole rows, 3 (i, f, o) or 2 (i, o)
    int Hh               # the size of h: H, or the projection's rows
    const Steps *steps
    const Operand *w_hh  # the right operand of the per-step product
    const Operand *w_hr  # the projection's per-step operand, or NULL (no projection)
    const void *b_ih
    const void *b_hh
    const void *w_peep   # (P, H), zeros without peepholes
    void *gates          # per-step (G*H)
    void *hs             # state sequence (Hh)
    void *cs             # state sequence (H)
    void *y              # per-step (Hh)
    void *rs             # per-step (H) r_t, with a projection
    void *zeros          # (B, H) zeros, with a projection (see forward_rows, backward_rows)
    void *scratch        # (B, H), with a projection: forward, the gate kernel's unread y;
                         # backward, dL/dr_t of the step
    const void *dy       # per-step (Hh)
    void *dhs            # per-step (Hh) dL/dh_t, with a projection
    void *dgates         # per-step (G*H)
    void *dh             # (B, Hh)
    void *dc             # (B, H)
    double *dpeep        # (MAX_PARTS, P*H) accumulators, one per thread, or NULL
    double *dh_sq        # (MAX_PARTS, T) squared norms of dL/dh_t, one row per thread, or NULL
    double *dc_sq        # (MAX_PARTS, T) the same for dL/dc_t, or NULL (no record)


cdef void output_gradient(int rows, int Hh, const floating *dy, floating *dh,
                          floating *dh_t) noexcept nogil:
    """dh_t = dL/dh_t = dy + dh, after which dh restarts from zero."""
    cdef int64_t j
    for j in range(<int64_t>rows * Hh):
        dh_t[j] = dy[j] + dh[j]
        dh[j] = 0


cdef void forward_rows(LstmWork *w, int b0, int b1, int part, Stop *stop,
                       floating *gates) noexcept nogil:
    cdef const Steps *st = w.steps
    cdef int T = st.T, H = w.H, G = w.G, Hh = w.Hh, rev = w.rev, rows, s, t
    cdef int before, after  # the slots of hs and cs of the states before and after step t
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
        rows = active_rows(st, t, b0, b1)
        if rows <= 0:
            continue
        if w.keep:
            before, after = t + rev, t + 1 - rev
        else:
            before, after = s & 1, (s + 1) & 1
        # gates[t, rows] += hs[before, rows] @ w_hh.T
        step_matmul(w.w_hh, rows, &hs[slot_at(st, before, b0, Hh)], Hh, 1,
                    &gates[step_at(st, t, b0, G)], G)
        if w.w_hr == NULL:
            lstm_forward_step(w.forget_gate, rows, H, t, NULL, &gates[step_at(st, t, b0, G)],
                              <const floating *>w.b_ih, <const floating *>w.b_hh,
                              <const floating *>w.w_peep, &hs[slot_at(st, before, b0, H)],
                              &cs[slot_at(st, before, b0, H)], &hs[slot_at(st, after, b0, H)],
                              &cs[slot_at(st, after, b0, H)], &y[step_at(st, t, b0, H)])
            continue
        # The gate kernel writes r_t where it writes h; it reads its h_{t-1} (zeros) only for
        # rows past their length, and the rows of a step all run.
        lstm_forward_step(w.forget_gate, rows, H, t, NULL, &gates[step_at(st, t, b0, G)],
                          <const floating *>w.b_ih, <const floating *>w.b_hh,
                          <const floating *>w.w_peep, zeros, &cs[slot_at(st, before, b0, H)],
                          &rs[step_at(st, t, b0, H)], &cs[slot_at(st, after, b0, H)], scratch)
        # y[t, rows] = rs[t, rows] @ w_hr.T, and h_t = y_t
        step_matmul(w.w_hr, rows, &rs[step_at(st, t, b0, H)], H, 0, &y[step_at(st, t, b0, Hh)],
                    Hh)
        memcpy(&hs[slot_at(st, after, b0, Hh)], &y[step_at(st, t, b0, Hh)],
               <size_t>rows * Hh * sizeof(floating))


cdef void backward_rows(LstmWork *w, int b0, int b1, int part, Stop *stop,
                        floating *dgates) noexcept nogil:
    cdef const Steps *st = w.steps
    cdef int T = st.T, H = w.H, G = w.G, Hh = w.Hh, rev = w.rev, rows, s, t
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
        rows = active_rows(st, t, b0, b1)
        if rows <= 0:
            continue
        # ||dL/dh_t||^2 of the rows of step t: dy[t] plus what step t+1 passed back
        record_state_grad(dh_sq, rows, Hh, t, NULL, &dy[step_at(st, t, b0, Hh)], dh)
        if w.w_hr == NULL:
            lstm_backward_step(w.forget_gate, rows, H, t, NULL, &gates[step_at(st, t, b0, G)],
                               &cs[slot_at(st, t + rev, b0, H)],
                               &cs[slot_at(st, t + 1 - rev, b0, H)], <const floating *>w.w_peep,
                               &dy[step_at(st, t, b0, H)], dh, dc,
                               &dgates[step_at(st, t, b0, G)], dpeep,
                               NULL if dc_sq == NULL else dc_sq + t)
        else:
            # dr = dL/dr_t = dhs[t, rows] @ w_hr, the gate kernel's "dy"; its dh stays zeros
            output_gradient(rows, Hh, &dy[step_at(st, t, b0, Hh)], dh,
                            &dhs[step_at(st, t, b0, Hh)])
            step_matmul(w.w_hr, rows, &dhs[step_at(st, t, b0, Hh)], Hh, 0, dr, H)
            lstm_backward_step(w.forget_gate, rows, H, t, NULL, &gates[step_at(st, t, b0, G)],
                               &cs[slot_at(st, t + rev, b0, H)],
                               &cs[slot_at(st, t + 1 - rev, b0, H)], <const floating *>w.w_peep,
                               dr, zeros, dc, &dgates[step_at(st, t, b0, G)], dpeep,
                               NULL if dc_sq == NULL else dc_sq + t)
        # dh[rows] += dgates[t, rows] @ w_hh
        step_matmul(w.w_hh, rows, &dgates[step_at(st, t, b0, G)], G, 1, dh, Hh)


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
    """What backward needs from forward: the pass's buffers and its inputs (not copied), and
    what forward got with its checked sizes, which backward checks its arguments against."""
    cdef tuple inputs, sizes  # (x, w_ih, w_hh, w_hr, lengths); (dtype, T, B, D, H, G, Hh)
    cdef object x, w_ih, w_hh, w_peep, w_hr, gates, hs, cs, rs
    cdef Layout layout


def forward(x, state0, params, lengths, reverse, keep=True):
    """LSTM forward over one direction of one layer -> (y, (h_n, c_n), cache).

    Parameters and returns as the cell contract of fastrnn/_backends.py (docs/layers.md); the
    cell has no forget gate when w_ih has 3H rows (gates i, g, o, w_peep (2, H)). With
    params["w_hr"] (P, H) (optional key), h is projected: h0, h_n and y have P columns. Without
    `keep` the states of only two steps are held at a time and cache is None. Every argument is
    checked against the weights' sizes first (TypeError/ValueError)."""
    sizes = check_forward("LSTM", x, state0, 2, params, lengths, (4, 3), True)
    dtype, T, B, D, H, G, Hh = sizes
    w_hh = params["w_hh"]
    peephole_shape = (G // H - 1, H)
    w_peep = params.get("w_peep")
    if w_peep is None:
        w_peep = np.zeros(peephole_shape, dtype)
    check_array("params['w_peep']", w_peep, dtype, peephole_shape)
    cdef _Cache cache = _Cache.__new__(_Cache)
    cache.inputs = (x, params["w_ih"], w_hh, params.get("w_hr"), lengths)
    cache.sizes = sizes
    cdef Layout lay = layout(lengths, x.shape[0], x.shape[1], reverse, keep)
    cache.layout, cache.x, cache.w_ih, cache.w_hh = lay, lay.pack(x), params["w_ih"], w_hh
    cache.w_peep, cache.w_hr = w_peep, params.get("w_hr")
    cache.hs, cache.cs = lay.state_sequence(state0[0]), lay.state_sequence(state0[1])
    if x.dtype == np.float32:
        y = _forward[float](cache.x, params["w_ih"], w_hh, params["b_ih"], params["b_hh"], w_peep,
                            cache.w_hr, cache)
    else:
        y = _forward[double](cache.x, params["w_ih"], w_hh, params["b_ih"], params["b_hh"],
                             w_peep, cache.w_hr, cache)
    return (lay.unpack(y), (lay.final(cache.hs), lay.final(cache.cs)),
            cache if keep else None)


cdef object _forward(const floating[:, ::1] x, const floating[:, ::1] w_ih,
                     const floating[:, ::1] w_hh, const floating[::1] b_ih,
                     const floating[::1] b_hh, const floating[:, ::1] w_peep,
                     const floating[:, ::1] w_hr, _Cache cache):
    """The time loop and the products of forward on the packed x; returns the packed y."""
    cdef Layout lay = cache.layout
    cdef int R = lay.rows, D = x.shape[1], H = cache.cs.shape[1], Hh = w_hh.shape[1]
    cdef int G = w_ih.shape[0]
    cdef LstmWork work
    cdef Scan scan
    dtype = np.float32 if floating is float else np.float64
    # Kept for backward: the activated gates, the h and c sequences (and the initial state) and,
    # with a projection, r.
    cache.gates = empty((R, G), dtype)
    y_array = empty((R, Hh), dtype)
    cdef floating[:, ::1] gates = cache.gates, hs = cache.hs, cs = cache.cs, y = y_array
    cdef floating[::1] panels = step_panels(Hh, G, dtype, lay.steps.T, lay.steps.B)
    cdef floating[::1] panels_ih = product_panels(R, D, G, dtype)

    memset(&work, 0, sizeof(LstmWork))
    init_scan(&scan, floating is double, True, lay, forward_part, &work)
    work.is_double, work.forget_gate, work.keep = floating is double, G == 4 * H, lay.keep
    work.H, work.Hh, work.G, work.P, work.rev = H, Hh, G, w_peep.shape[0], lay.reverse
    work.steps = &lay.steps
    # per step: @ w_hh.T
    work.w_hh = add_operand(&scan, Hh, G, &w_hh[0, 0], Hh, True, panels_ptr(panels))
    projection = None if w_hr is None else _projection(&scan, &work, lay, w_hr, True)
    work.w_peep = &w_peep[0, 0]
    work.b_ih, work.b_hh = bias_ptr(b_ih), bias_ptr(b_hh)
    work.gates, work.hs, work.cs, work.y = &gates[0, 0], &hs[0, 0], &cs[0, 0], &y[0, 0]
    # gates = x @ w_ih.T
    input_projection(&scan.products, R, D, G, &x[0, 0], &w_ih[0, 0], &gates[0, 0], G,
                     panels_ptr(panels_ih))
    run_scan(&scan, <int64_t>R * (G * (D + Hh) + (0 if w_hr is None else H * Hh)))
    cache.rs = None if projection is None else projection[0]
    return y_array


def backward(dy, dstate_n, cache, grads, norms=None):
    """LSTM backward through one forward call -> (dx, (dh0, dc0)); adds into `grads`.

    Parameters and returns as the cell contract of fastrnn/_backends.py (docs/layers.md),
    `norms` ((2, T) float64 or None) included; every argument is checked against the sizes of the
    forward call first (TypeError/ValueError)."""
    cdef _Cache c = check_cache(cache, _Cache)
    dtype, T, B, D, H, G, Hh = c.sizes
    check_backward("LSTM", dy, dstate_n, 2, grads, c.inputs, dtype, T, B, D, H, G, Hh, norms)
    peephole_shape = (G // H - 1, H)
    check_array("params['w_peep'] (kept from forward)", c.w_peep, dtype, peephole_shape)
    if grads.get("w_peep") is not None:
        check_array("grads['w_peep']", grads["w_peep"], dtype, peephole_shape, True)
    cdef Layout lay = c.layout
    dh, dc = lay.sort(dstate_n[0]), lay.sort(dstate_n[1])
    # Per-thread rows of squared norms, summed after the pass: no two threads share a row.
    sq = None if norms is None else np.zeros((2, MAX_PARTS, dy.shape[0]))
    if dy.dtype == np.float32:
        dx = _backward[float](lay.pack(dy), dh, dc, c.x, c.w_ih, c.w_hh, c.w_peep, c.w_hr, lay,
                              c.gates, c.hs, c.cs, c.rs, grads["w_ih"], grads["w_hh"],
                              grads["b_ih"], grads["b_hh"], grads.get("w_peep"),
                              grads.get("w_hr"), sq)
    else:
        dx = _backward[double](lay.pack(dy), dh, dc, c.x, c.w_ih, c.w_hh, c.w_peep, c.w_hr, lay,
                               c.gates, c.hs, c.cs, c.rs, grads["w_ih"], grads["w_hh"],
                               grads["b_ih"], grads["b_hh"], grads.get("w_peep"),
                               grads.get("w_hr"), sq)
    if norms is not None:
        np.sqrt(sq.sum(axis=1), out=norms)
    return lay.unpack(dx), (lay.unsort(dh), lay.unsort(dc))


def gate_activations(cache):
    """The activated gates of the forward that made `cache`: (T, G, B, H), rows of G in the
    cell spec's gate order (i, f, g, o or i, g, o); the contract in fastrnn/_backends.py."""
    cdef _Cache c = check_cache(cache, _Cache)
    gates = c.layout.unpack(c.gates)
    T, B, GH = gates.shape
    H = c.cs.shape[1]
    return gates.reshape(T, B, GH // H, H).transpose(0, 2, 1, 3).copy()


cdef object _backward(const floating[:, ::1] dy, floating[:, ::1] dh, floating[:, ::1] dc,
                      const floating[:, ::1] x, const floating[:, ::1] w_ih,
                      const floating[:, ::1] w_hh, const floating[:, ::1] w_peep,
                      const floating[:, ::1] w_hr, Layout lay, const floating[:, ::1] gates,
                      const floating[:, ::1] hs, const floating[:, ::1] cs,
                      const floating[:, ::1] rs, floating[:, ::1] dw_ih, floating[:, ::1] dw_hh,
                      floating[::1] db_ih, floating[::1] db_hh, floating[:, ::1] dw_peep,
                      floating[:, ::1] dw_hr, double[:, :, ::1] sq):
    """The time loop and the products of backward on the packed dy, from dh, dc (the final state
    gradients, sorted; left as those of the initial state); returns the packed dx."""
    cdef int R = lay.rows, D = x.shape[1], H = cs.shape[1], Hh = hs.shape[1], G = w_ih.shape[0]
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
    cdef floating[::1] panels = step_panels(G, Hh, dtype, lay.steps.T, lay.steps.B)
    cdef floating[::1] panels_ih = product_panels(R, G, D, dtype)
    cdef floating[:, ::1] dhs = None

    memset(&work, 0, sizeof(LstmWork))
    init_scan(&scan, floating is double, False, lay, backward_part, &work)
    work.is_double, work.forget_gate = floating is double, G == 4 * H
    work.H, work.Hh, work.G, work.P, work.rev = H, Hh, G, P, rev
    work.steps = &lay.steps
    # per step: @ w_hh
    work.w_hh = add_operand(&scan, G, Hh, &w_hh[0, 0], Hh, False, panels_ptr(panels))
    projection = None if w_hr is None else _projection(&scan, &work, lay, w_hr, False)
    if projection is not None:
        dhs = projection[0]
    work.w_peep = &w_peep[0, 0]
    work.gates, work.cs, work.dy = <void *>&gates[0, 0], <void *>&cs[0, 0], &dy[0, 0]
    work.dgates, work.dh, work.dc = &dgates[0, 0], &dh[0, 0], &dc[0, 0]
    work.dpeep = NULL if dw_peep is None else &dpeep[0, 0]
    if sq is not None:
        work.dh_sq, work.dc_sq = &sq[0, 0, 0], &sq[1, 0, 0]
    # dx = dgates @ w_ih; dw_ih += dgates.T @ x; dw_hh += dgates.T @ hs[rev:rev + T];
    # dbias = dgates.sum((0, 1))
    gate_gradient_products(&scan.products, R, D, Hh, G, &dgates[0, 0], &w_ih[0, 0], &x[0, 0],
                           &hs[0, 0] + slot_at(&lay.steps, rev, 0, Hh), &dx[0, 0], &dw_ih[0, 0],
                           &dw_hh[0, 0], NULL if db_ih is None else &dbias[0, 0],
                           panels_ptr(panels_ih))
    if w_hr is not None:
        # dw_hr += dhs.T @ rs, h_t = W_hr r_t over all steps
        product(&scan.products, True, False, Hh, H, R, &dhs[0, 0], Hh, &rs[0, 0], H, True,
                &dw_hr[0, 0], H)
    run_scan(&scan, <int64_t>R * (G * (D + Hh) + (0 if w_hr is None else 2 * H * Hh)))
    if db_ih is not None:
        add_to(&db_ih[0], &dbias[0, 0], G)
        add_to(&db_hh[0], &dbias[0, 0], G)
    if dw_peep is not None:
        for part in range(MAX_PARTS):  # the rows of threads that did not run are zeros
            add_to(&dw_peep[0, 0], &dpeep[part, 0], P * H)
    return dx_array


cdef tuple _projection(Scan *scan, LstmWork *work, Layout lay, const floating[:, ::1] w_hr,
                       bint forward):
    """Give a pass of `work` over `lay` a projection w_hr (Hh, H): its per-step operand (forward
    @ w_hr.T, backward @ w_hr) and buffers. Returns them, to be kept until the pass has run; the
    first is the per-step buffer the pass fills (r_t forward, dL/dh_t backward), zeros in the
    rows no step runs, which the W_hr gradient reads."""
    cdef int H = work.H, Hh = work.Hh, B = lay.steps.B
    dtype = np.float32 if floating is float else np.float64
    per_step_array = empty((lay.rows, H if forward else Hh), dtype)
    lay.zero_unused(per_step_array)
    cdef floating[:, ::1] per_step = per_step_array
    cdef floating[:, ::1] zeros = np.zeros((B, H), dtype), scratch = empty((B, H), dtype)
    cdef floating[::1] panels = (step_panels(H, Hh, dtype, lay.steps.T, B) if forward
                                 else step_panels(Hh, H, dtype, lay.steps.T, B))
    if forward:
        work.w_hr = add_operand(scan, H, Hh, &w_hr[0, 0], H, True, panels_ptr(panels))
        work.rs = &per_step[0, 0]
    else:
        work.w_hr = add_operand(scan, Hh, H, &w_hr[0, 0], H, False, panels_ptr(panels))
        work.dhs = &per_step[0, 0]
    work.zeros, work.scratch = &zeros[0, 0], &scratch[0, 0]
    return per_step_array, zeros.base, scratch.base, None if panels is None else panels.base
