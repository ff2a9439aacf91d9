"""The generic layer scan (see scan.pxd): a pass over one direction of one layer, whatever the
cell, in the spirit of PyTorch's RNN.cpp: a cell knows one step of its rows, this module runs its
time loop and the products around it.

Buffers, in time order t = 0 .. T-1 whatever the direction, laid out by a Layout: a cell's
per-step buffers, such as `gates` (rows, G*H), hold step after step the rows of each step; `gates`
holds first the input projection x.W_ihᵀ of all rows (one product), then, step by step, the
activated gates. States live in state sequences `hs` (and `cs`) of T+1 slots, with the initial
state in the slot before the first step processed: slot t (forward) or t+1 (reverse) is the state
before step t, and slot t+1 (forward) or t (reverse) the state after it. So `hs` read from slot
`reverse` on is the h_{t-1} of every row of every step, which the W_hh gradient needs as one
product.

Without lengths, the layout is the padded one: every step has all B rows, a per-step buffer is
(T, B, width) and a state sequence (T+1, B, H). With lengths, a pass costs only the real work
(like PyTorch's PackedSequence): the batch is sorted by length, descending (stably), so that the
rows a step runs are a prefix of it, n_t = #{b : lengths[b] > t} rows at step t in either
direction, and every buffer holds only the rows that are run, packed. Slot s holds n_{s-1} rows
(n_{-1} = B): forward, step t reads slot t and writes the n_t rows of slot t+1; reverse, it reads
slot t+1 and writes slot t, whose rows past n_t are the initial states of the sequences that start
at step t-1. Step t of a per-step buffer holds as many rows as the slot it reads, n_{t-1}
forward, n_t reverse, so that it lines up with `hs` from slot `reverse` on as in the padded
layout. Forward, the rows past n_t of step t (the sequences that ended at step t-1, at most B
rows in all) are zeros in the buffers the products read. The pack and unpack methods of Layout
gather the inputs into this layout and the results out of it, in the original order, with zeros
in the padding.

A pass that keeps nothing for backward (keep=False, the inference path) needs only the state
before and the state after each step: its state sequences hold two slots of B rows, and the s-th
step processed (t = s forward, T-1-s reverse) reads slot s % 2 and writes slot (s+1) % 2, in
either layout. A row is written only while its sequence runs, so with lengths a sequence's
initial state goes to the slot its first step reads and its final state stays in the slot its
last step wrote.
"""
from collections.abc import Mapping

import numpy as np

from cython cimport floating
from libc.stdint cimport int64_t, uintptr_t
from libc.string cimport memcpy, memset

from fastrnn._kernels.cpu cimport fp_mode_fast_enter, fp_mode_restore, monotonic_ns, store_flag
from fastrnn._kernels.buffers cimport empty
from fastrnn._kernels.products cimport (Operand, Products, add_partials_part, column_sum,
                                        init_products, pack_last, pack_part, product,
                                        products_part, set_operand, split_sums)
from fastrnn._kernels.threads cimport (Team, pass_begin, pass_end, part_start, team_free, team_init,
                                       team_run)

cdef extern from "Python.h":
    # Declared without Cython's `except -1`: the exception a signal handler raised stays set, to
    # be raised when the pass returns (see run_scan).
    int PyErr_CheckSignals() nogil
    void *PyErr_Occurred()

cdef enum:
    CHECK_NS = 20000000  # the time loop looks for pending signals (Ctrl-C) this often

# The largest size BLAS's 32-bit int arguments take: rows of a whole-sequence product (T*B),
# D, H and G*H. Sizes are int64 in the cells; what reaches an int (BLAS's arguments and the gate
# kernels', which mirror them) is checked against this first, before anything is allocated.
BLAS_INT_MAX = 2**31 - 1
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_sizes(int64_t T, int64_t B, int64_t D, int64_t H, int64_t G, int64_t limit=BLAS_INT_MAX):
    """ValueError unless T, B, D, H >= 1 and T*B (the rows of the whole-sequence products), D, H
    and G (the gate rows, G*H for the cell) are at most `limit` (BLAS's 32-bit ints)."""
    for name, size in (("T (steps)", T), ("B (batch)", B), ("D (input size)", D),
                       ("H (hidden size)", H)):
        if size < 1:
            raise ValueError(f"{name} must be at least 1, got {size}")
    for name, size in (("T*B (steps x batch)", T * B), ("D (input size)", D),
                       ("the gate rows (gates x H)", G)):
        if size > limit:
            raise ValueError(
                f"{name} is {size}, more than the {limit} that a BLAS product (32-bit int "
                f"sizes) takes: split the sequence or the batch into shorter runs")
    return None


cdef object check_array(str name, array, dtype, tuple shape, bint writable=False):
    """`array` if it is a C-contiguous ndarray of `dtype` and `shape` (writable when `writable`),
    else TypeError/ValueError naming it, with the expected and the actual."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a {np.dtype(dtype).name} array of shape {shape}, "
                        f"got {type(array).__name__}")
    if array.dtype != dtype:
        raise TypeError(f"{name} must be {np.dtype(dtype).name}, got {array.dtype}")
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous, got strides {array.strides}")
    if writable and not array.flags.writeable:
        raise ValueError(f"{name} must be writable (the gradient is added into it)")
    return array


cdef object check_mapping(str name, value, tuple keys):
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict of arrays by name, got {type(value).__name__}")
    for key in keys:
        if key not in value:
            raise KeyError(f"{name} has no entry {key!r}")
    return value


cdef tuple check_state(str name, state, tuple widths, dtype, int64_t B):
    """`state`: one (B, width) array per entry of `widths` (h, then c)."""
    shapes = tuple((B, width) for width in widths)
    if not isinstance(state, (tuple, list)) or len(state) != len(widths):
        raise TypeError(f"{name} must be a tuple of {len(widths)} arrays of shapes "
                        f"{', '.join(map(str, shapes))}, got {type(state).__name__}")
    return tuple(check_array(f"{name}[{i}]", s, dtype, shape)
                 for i, (s, shape) in enumerate(zip(state, shapes)))


cdef void check_biases(str name, biases, dtype, int64_t G, bint writable) except *:
    """Both biases None (a layer without bias) or both (G,) arrays."""
    b_ih, b_hh = biases[0], biases[1]
    if (b_ih is None) != (b_hh is None):
        raise ValueError(f"{name}['b_ih'] and {name}['b_hh'] must both be arrays or both None")
    if b_ih is not None:
        check_array(f"{name}['b_ih']", b_ih, dtype, (G,), writable)
        check_array(f"{name}['b_hh']", b_hh, dtype, (G,), writable)


cdef void check_lengths(lengths, int64_t T, int64_t B) except *:
    if lengths is None:
        return
    check_array("lengths", lengths, np.int64, (B,))
    if B and (lengths.min() < 1 or lengths.max() > T):
        raise ValueError(f"lengths must be between 1 and T={T}, got values from "
                         f"{lengths.min()} to {lengths.max()}")


cdef object check_cache(cache, type kind):
    """`cache` if it is a `kind`, what the cell module's forward returned (with keep=True), else
    TypeError."""
    if not isinstance(cache, kind):
        raise TypeError(f"cache must be what this module's forward returned with keep=True, got "
                        f"{type(cache).__name__}")
    return cache


cdef tuple check_forward(str cell, x, state0, int state_parts, params, lengths,
                         tuple gate_counts, bint projection=False):
    """The checked (dtype, T, B, D, H, G, Hh) of a cell's forward: x (T, B, D) float32 or float64;
    with `projection` (the LSTM) and params.get('w_hr') not None, w_hr (Hh, H), else Hh = H;
    params['w_hh'] (G, Hh) with G = k*H for k in `gate_counts`; w_ih (G, D); the biases; state0
    (`state_parts` arrays: h (B, Hh), then c (B, H)); lengths. Every size is checked before
    anything is allocated."""
    if not isinstance(x, np.ndarray) or x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"x must be a float32 or float64 array, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim != 3:
        raise ValueError(f"x must be 3-D (T, B, D), got shape {x.shape}")
    dtype = x.dtype
    check_mapping("params", params, ("w_ih", "w_hh", "b_ih", "b_hh"))
    w_hh = params["w_hh"]
    if not isinstance(w_hh, np.ndarray) or w_hh.ndim != 2:
        raise ValueError(f"params['w_hh'] must be a 2-D array (G*H, H), got "
                         f"{getattr(w_hh, 'shape', type(w_hh).__name__)}")
    w_hr = params.get("w_hr") if projection else None
    if w_hr is None:
        H = Hh = w_hh.shape[1]
    else:
        if not isinstance(w_hr, np.ndarray) or w_hr.ndim != 2 or w_hr.shape[0] < 1:
            raise ValueError(f"params['w_hr'] must be a 2-D array (proj_size, H), got "
                             f"{getattr(w_hr, 'shape', type(w_hr).__name__)}")
        Hh, H = w_hr.shape
    if H < 1 or w_hh.shape[0] not in [k * H for k in gate_counts]:
        rows = " or ".join(f"{k}*H" for k in gate_counts)
        expected = f"({rows}, H)" if w_hr is None else (
            f"({rows}, proj_size), H = {H} and proj_size = {Hh} as in params['w_hr']")
        raise ValueError(f"params['w_hh'] of the {cell} cell must have shape {expected}, got "
                         f"{w_hh.shape}")
    G = w_hh.shape[0]
    T, B, D = x.shape
    check_sizes(T, B, D, H, G)
    check_array("x", x, dtype, (T, B, D))
    check_array("params['w_ih']", params["w_ih"], dtype, (G, D))
    check_array("params['w_hh']", w_hh, dtype, (G, Hh))
    if w_hr is not None:
        check_array("params['w_hr']", w_hr, dtype, (Hh, H))
    check_biases("params", (params["b_ih"], params["b_hh"]), dtype, G, False)
    check_state("state0", state0, (Hh, H)[:state_parts], dtype, B)
    check_lengths(lengths, T, B)
    return dtype, T, B, D, H, G, Hh


cdef void check_backward(str cell, dy, dstate_n, int state_parts, grads, cache_arrays, dtype,
                         int64_t T, int64_t B, int64_t D, int64_t H, int64_t G, int64_t Hh,
                         norms) except *:
    """Check a cell's backward against the sizes of its forward: dy (T, B, Hh), dstate_n, the
    gradients (writable; grads['w_hr'] with a projection), `norms` (None or float64
    (state_parts, T), writable) and `cache_arrays` (x, w_ih, w_hh, w_hr, lengths as forward got
    them, w_hr None without a projection: the caller may have changed them in place since)."""
    x, w_ih, w_hh, w_hr, lengths = cache_arrays
    check_array("dy", dy, dtype, (T, B, Hh))
    check_state("dstate_n", dstate_n, (Hh, H)[:state_parts], dtype, B)
    check_mapping("grads", grads, ("w_ih", "w_hh", "b_ih", "b_hh"))
    check_array("grads['w_ih']", grads["w_ih"], dtype, (G, D), True)
    check_array("grads['w_hh']", grads["w_hh"], dtype, (G, Hh), True)
    check_biases("grads", (grads["b_ih"], grads["b_hh"]), dtype, G, True)
    if norms is not None:
        check_array("norms", norms, np.float64, (state_parts, T), True)
    check_array("x (kept from forward)", x, dtype, (T, B, D))
    check_array("params['w_ih'] (kept from forward)", w_ih, dtype, (G, D))
    check_array("params['w_hh'] (kept from forward)", w_hh, dtype, (G, Hh))
    if w_hr is not None:
        check_array("grads['w_hr']", grads.get("w_hr"), dtype, (Hh, H), True)
        check_array("params['w_hr'] (kept from forward)", w_hr, dtype, (Hh, H))
    check_lengths(lengths, T, B)


cdef void gather_rows(floating *dst, const floating *src, const int64_t *index, int64_t n,
                      int width) noexcept nogil:
    """dst row r := src row index[r], or zeros where index[r] < 0, for r < n."""
    cdef int64_t r
    cdef size_t size = width * sizeof(floating)
    for r in range(n):
        if index[r] < 0:
            memset(dst + r * width, 0, size)
        else:
            memcpy(dst + r * width, src + index[r] * width, size)


cdef object gather(source, const int64_t[::1] index):
    """The rows index[r] of the 2-D C-contiguous `source` (zeros where index[r] < 0)."""
    cdef int width = source.shape[1]
    cdef int64_t n = index.shape[0]
    out = empty((n, width), source.dtype)
    cdef uintptr_t src = source.ctypes.data, dst = out.ctypes.data
    cdef bint is_float = source.dtype == np.float32
    if n == 0:
        return out
    with nogil:
        if is_float:
            gather_rows(<float *>dst, <const float *>src, &index[0], n, width)
        else:
            gather_rows(<double *>dst, <const double *>src, &index[0], n, width)
    return out


cdef class Layout:
    """Where the rows of a pass live (see the module docstring), and the moves of the inputs and
    results of a pass into and out of it. Made by `layout`."""

    def pack(self, a):
        """(T, B, width) in time order, batch rows in the original order -> the per-step buffer
        (rows, width) of this layout (without lengths, a view of `a`)."""
        flat = a.reshape(-1, a.shape[2])
        if self.order is None:
            return flat
        return gather(flat, self.pack_index)

    def unpack(self, p):
        """A per-step buffer (rows, width) -> (T, B, width) in the original order, zeros in the
        padding (without lengths, a view of `p`)."""
        if self.order is None:
            return p.reshape(self.steps.T, self.steps.B, p.shape[1])
        return gather(p, self.unpack_index).reshape(self.steps.T, self.steps.B, p.shape[1])

    def sort(self, a):
        """A copy of the per-sequence array `a` (B, width), rows in the sorted order."""
        if self.order is None:
            return a.copy()
        return a[self.order]

    def unsort(self, a):
        """The per-sequence array `a` (B, width) in the sorted order -> in the original order."""
        if self.order is None:
            return a
        out = np.empty_like(a)
        out[self.order] = a
        return out

    def state_sequence(self, state0):
        """A state sequence (state_rows, H) with the initial state `state0` (B, H), original
        order, in place."""
        hs = empty((self.state_rows, state0.shape[1]), state0.dtype)
        if self.order is None:
            start = state_slot(self, 0) * self.steps.B
            hs[start:start + self.steps.B] = state0
        else:
            hs[self.first_row] = state0[self.order]
        return hs

    def final(self, hs):
        """The final state of every sequence (B, H), original order, from the state sequence."""
        if self.order is None:
            start = state_slot(self, self.steps.T) * self.steps.B
            return hs[start:start + self.steps.B].copy()
        out = np.empty((self.steps.B, hs.shape[1]), hs.dtype)
        out[self.order] = hs[self.last_row]
        return out

    def states_after_steps(self, hs):
        """The state after every step (T, B, H), original order, from the state sequence `hs`;
        zeros at padded steps."""
        T, B = self.steps.T, self.steps.B
        if self.order is None:
            start = (not self.reverse) * B
            return hs[start:start + T * B].reshape(T, B, hs.shape[1])
        step = np.arange(T * B) // B
        used = self.unpack_index >= 0
        index = np.full(T * B, -1, np.int64)
        # row i of step t: slot t + 1 - reverse, row i
        index[used] = (self.slot_row[step[used] + 1 - self.reverse] + self.unpack_index[used]
                       - self.step_row[step[used]])
        return gather(hs, index).reshape(T, B, hs.shape[1])

    def zero_unused(self, p):
        """Zero the rows of the per-step buffer `p` that no step runs, which the products read:
        forward, those past n_t of step t."""
        if self.dead_rows is not None:
            p[self.dead_rows] = 0


cdef int state_slot(Layout lay, int done) noexcept:
    """The slot of a state sequence of `lay` that holds the state after `done` steps of the pass
    (0: the initial state of a sequence of T steps)."""
    if not lay.keep:
        return done & 1
    return lay.steps.T - done if lay.reverse else done


cdef void pack_sorted(Layout lay, lengths, int T, int B, bint reverse):
    """The packed layout of sequences of `lengths` (not all T) into `lay`: the batch sorted by
    length, descending, and the rows each step runs, n_t = #{b : lengths[b] > t}, packed."""
    lay.order = np.argsort(-lengths, kind="stable")
    lay.lengths = np.ascontiguousarray(lengths[lay.order])
    lay.active, lay.step_row = np.empty(T, np.intc), np.empty(T + 1, np.int64)
    lay.slot_row = np.empty(T + 1, np.int64)
    cdef const int64_t[::1] order = lay.order, sorted_lengths = lay.lengths
    cdef int[::1] active = lay.active
    cdef int64_t[::1] step_row = lay.step_row, slot_row = lay.slot_row
    cdef int t, i = B, held, before
    for t in range(T):
        while i > 0 and sorted_lengths[i - 1] <= t:
            i -= 1
        active[t] = i
    # step t holds the rows of the slot it reads: n_{t-1} forward (n_{-1} = B), n_t reverse;
    # slot s holds n_{s-1} rows
    step_row[0] = slot_row[0] = 0
    for t in range(T):
        before = B if t == 0 else active[t - 1]
        step_row[t + 1] = step_row[t] + (active[t] if reverse else before)
        slot_row[t + 1] = slot_row[t] + before
    lay.rows = step_row[T]
    lay.state_rows = slot_row[T] + active[T - 1] if lay.keep else 2 * <int64_t>B
    # per-step row r = step_row[t] + i holds batch row order[i] of step t, or nothing (-1) if
    # i >= n_t: the rows the products read there are zeros
    lay.pack_index = np.empty(lay.rows, np.int64)
    lay.unpack_index = np.full(<int64_t>T * B, -1, np.int64)
    cdef int64_t[::1] pack_index = lay.pack_index, unpack_index = lay.unpack_index
    cdef int64_t r
    for t in range(T):
        held = step_row[t + 1] - step_row[t]
        for i in range(held):
            r = step_row[t] + i
            if i < active[t]:
                pack_index[r] = <int64_t>t * B + order[i]
                unpack_index[pack_index[r]] = r
            else:
                pack_index[r] = -1
    unused = np.flatnonzero(lay.pack_index < 0)
    lay.dead_rows = unused if unused.size else None
    # the slot before a sequence's first step and the slot after its last (slot s starts at
    # row s * B for s <= 1, as the two slots of a pass that keeps nothing)
    lay.first_row, lay.last_row = np.empty(B, np.int64), np.empty(B, np.int64)
    cdef int64_t[::1] first_row = lay.first_row, last_row = lay.last_row
    for i in range(B):
        first_row[i] = slot_row[state_slot(lay, T - sorted_lengths[i] if reverse else 0)] + i
        last_row[i] = slot_row[state_slot(lay, T if reverse else sorted_lengths[i])] + i


cdef Layout layout(lengths, int T, int B, bint reverse, bint keep=True):
    """The layout of a pass of T steps over B sequences of `lengths` (None, or int64 (B,) with
    1 <= lengths[b] <= T), in the given direction: padded when every length is T. Without `keep`
    the state sequences hold two slots (see the module docstring)."""
    cdef Layout lay = Layout.__new__(Layout)
    lay.reverse, lay.keep = reverse, keep
    lay.steps.T, lay.steps.B = T, B
    if lengths is None or np.min(lengths) == T:
        lay.active = np.full(T, B, np.intc)
        lay.step_row = lay.slot_row = np.arange(T + 1, dtype=np.int64) * B
        lay.rows, lay.state_rows = <int64_t>T * B, <int64_t>(T + 1 if keep else 2) * B
    else:
        pack_sorted(lay, np.asarray(lengths, np.int64), T, B, reverse)
    cdef const int[::1] active = lay.active
    cdef const int64_t[::1] step_row = lay.step_row, slot_row = lay.slot_row
    cdef const int64_t[::1] sorted_lengths = lay.lengths
    lay.steps.active, lay.steps.step_row = &active[0], &step_row[0]
    lay.steps.slot_row = &slot_row[0]
    lay.steps.lengths = NULL if sorted_lengths is None else &sorted_lengths[0]
    return lay


cdef void init_scan(Scan *scan, bint is_double, bint forward, Layout layout, rows_fn time_loop,
                    void *cell) noexcept:
    """A scan of the batch rows of `layout` through `time_loop` on `cell`, with no operands or
    products."""
    scan.forward, scan.B, scan.steps = forward, layout.steps.B, &layout.steps
    scan.time_loop, scan.cell = time_loop, cell
    scan.stop.requested, scan.stop.next_check_ns = 0, 0
    scan.operand_count = 0
    init_products(&scan.products, is_double)


cdef void split_rows(Scan *scan, int parts) noexcept:
    """Give each of `parts` parts a contiguous slice of the batch rows: as many rows each without
    lengths; with lengths (sorted, the long sequences first), about the same sum of lengths."""
    cdef const int64_t *lengths = scan.steps.lengths
    cdef int64_t total = 0, done = 0
    cdef int part, b = 0
    for part in range(parts + 1):
        scan.bounds[part] = part_start(part, parts, scan.B)
    if lengths == NULL:
        return
    for b in range(scan.B):
        total += lengths[b]
    b = 0
    for part in range(1, parts):
        while b < scan.B and done * parts < part * total:
            done += lengths[b]
            b += 1
        scan.bounds[part] = b


cdef Operand *add_operand(Scan *scan, int k, int n, const void *b, int ldb, bint transposed,
                          void *panels) noexcept:
    """Append a per-step right operand (see Operand) to `scan`; returns it for the cell."""
    cdef Operand *op = &scan.operands[scan.operand_count]
    set_operand(op, k, n, b, ldb, transposed, panels)
    scan.operand_count += 1
    return op


cdef void pack_scan_part(void *work, int part, int parts) noexcept nogil:
    cdef Scan *scan = <Scan *>work
    pack_part(&scan.products, scan.operands, scan.operand_count, part, parts)


cdef void time_loop_part(void *work, int part, int parts) noexcept nogil:
    """team_run's callback: part `part` of `parts` of the batch rows through the cell's loop."""
    cdef Scan *scan = <Scan *>work
    scan.time_loop(scan.cell, scan.bounds[part], scan.bounds[part + 1], part, &scan.stop)


cdef void check_signals(Stop *stop) noexcept nogil:
    """Run the pending signal handlers (Ctrl-C's raises KeyboardInterrupt); when one raised, ask
    every part to stop, leaving its exception set for run_scan to raise."""
    cdef int raised
    with gil:
        raised = PyErr_CheckSignals() < 0
    if raised:
        store_flag(&stop.requested, 1)
    stop.next_check_ns = monotonic_ns() + CHECK_NS


cdef int run_scan(Scan *scan, int64_t macs) except -1:
    """Run `scan` in as many threads as pass_begin allows for `macs` multiply-adds, with
    flush-to-zero on: the packing of the operands, then forward, the products and the time loop;
    backward, the time loop, the products and the adding up of the threads' partial sums.
    A signal handler that raises during the time loop (Ctrl-C) stops the pass within CHECK_NS;
    its exception is raised here, and a backward so stopped has changed no gradient."""
    cdef Team team
    cdef unsigned int fp_mode
    cdef Products *products = &scan.products
    scan.stop.next_check_ns = monotonic_ns() + CHECK_NS
    team_init(&team, pass_begin(scan.B, macs))
    split_rows(scan, team.parts)
    try:
        partials = split_sums(products, team.parts,
                              np.float64 if products.is_double else np.float32)
        with nogil:
            fp_mode = fp_mode_fast_enter()
            team_run(&team, pack_scan_part, scan)
            if not scan.forward:
                team_run(&team, time_loop_part, scan)
            if not scan.stop.requested:
                team_run(&team, products_part, products)
            if scan.forward:
                team_run(&team, time_loop_part, scan)
            elif not scan.stop.requested:
                team_run(&team, add_partials_part, products)
            fp_mode_restore(fp_mode)
    finally:
        pass_end()
        team_free(&team)
    if scan.stop.requested:
        if PyErr_Occurred() == NULL:
            raise KeyboardInterrupt
        return -1  # the exception of the signal handler
    return 0


cdef void input_projection(Products *products, int rows, int D, int G, const void *x,
                           const void *w_ih, void *out, int ldo, void *panels_ih) noexcept:
    """Forward's products before the time loop, over all T*B rows at once: out = x @ w_ih.T (on
    W_ih packed into panels_ih, see pack_last); the biases are added in the gate kernels."""
    product(products, False, True, rows, G, D, x, D, w_ih, D, False, out, ldo)
    pack_last(products, panels_ih)


cdef void input_gradient_products(Products *products, int rows, int D, int G, const void *dgates,
                                  const void *w_ih, const void *x, void *dx, void *dw_ih,
                                  void *panels_ih) noexcept:
    """Append backward's products through gates = x.W_ihᵀ + ... over all T*B rows at once:
    dx = dgates @ w_ih (on W_ih packed into panels_ih, see pack_last) and dw_ih += dgates.T @ x."""
    product(products, False, False, rows, D, G, dgates, G, w_ih, D, False, dx, D)
    pack_last(products, panels_ih)
    product(products, True, False, G, D, rows, dgates, G, x, D, True, dw_ih, D)


cdef void gate_gradient_products(Products *products, int rows, int D, int H, int G,
                                 const void *dgates, const void *w_ih, const void *x,
                                 const void *h_prev, void *dx, void *dw_ih, void *dw_hh,
                                 double *dbias, void *panels_ih) noexcept:
    """Append backward's products through gates = x.W_ihᵀ + h_{t-1}.W_hhᵀ + b over all T*B rows:
    those of input_gradient_products, dw_hh += dgates.T @ h_prev (h_prev: the h_{t-1} of every
    step) and, unless dbias is NULL, dbias[0] += dgates.sum(0) (see ColumnSum)."""
    input_gradient_products(products, rows, D, G, dgates, w_ih, x, dx, dw_ih, panels_ih)
    product(products, True, False, G, H, rows, dgates, G, h_prev, H, True, dw_hh, H)
    if dbias != NULL:
        column_sum(products, rows, G, dgates, G, dbias)
