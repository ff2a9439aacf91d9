"""The generic layer scan (see scan.pxd): a pass over one direction of one layer, whatever the
cell, in the spirit of PyTorch's RNN.cpp: a cell knows one step of its rows, this module runs its
time loop and the products around it.

Buffers, in time order t = 0 .. T-1 whatever the direction: a cell's `gates` (T, B, G*H) holds
first the input projection x.W_ihᵀ of all T*B rows (one product), then, step by step, the
activated gates. States live in (T+1, B, H) sequences `hs` (and `cs`) with the initial state in
the slot before the first step processed: slot t (forward) or t+1 (reverse) is the state before
step t, and slot t+1 (forward) or t (reverse) the state after it. So `hs` read from slot
`reverse` on is the h_{t-1} of every step, which the W_hh gradient needs as one product.
"""
import numpy as np

from libc.stdint cimport int64_t

from fastrnn._kernels.cpu cimport fp_mode_fast_enter, fp_mode_restore
from fastrnn._kernels.products cimport (Operand, Products, add_partials_part, column_sum,
                                        init_products, pack_last, pack_part, product,
                                        products_part, set_operand, split_sums)
from fastrnn._kernels.threads cimport (Team, pass_begin, pass_end, part_start, team_free, team_init,
                                       team_run)


cdef void init_scan(Scan *scan, bint is_double, bint forward, int B, rows_fn time_loop,
                    void *cell) noexcept:
    """A scan of `B` batch rows through `time_loop` on `cell`, with no operands or products."""
    scan.forward, scan.B, scan.time_loop, scan.cell = forward, B, time_loop, cell
    scan.operand_count = 0
    init_products(&scan.products, is_double)


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
    scan.time_loop(scan.cell, part_start(part, parts, scan.B), part_start(part + 1, parts, scan.B),
                   part)


cdef int run_scan(Scan *scan, int64_t macs) except -1:
    """Run `scan` in as many threads as pass_begin allows for `macs` multiply-adds, with
    flush-to-zero on: the packing of the operands, then forward, the products and the time loop;
    backward, the time loop, the products and the adding up of the threads' partial sums."""
    cdef Team team
    cdef unsigned int fp_mode
    cdef Products *products = &scan.products
    team_init(&team, pass_begin(scan.B, macs))
    try:
        partials = split_sums(products, team.parts,
                              np.float64 if products.is_double else np.float32)
        with nogil:
            fp_mode = fp_mode_fast_enter()
            team_run(&team, pack_scan_part, scan)
            if not scan.forward:
                team_run(&team, time_loop_part, scan)
            team_run(&team, products_part, products)
            if scan.forward:
                team_run(&team, time_loop_part, scan)
            else:
                team_run(&team, add_partials_part, products)
            fp_mode_restore(fp_mode)
    finally:
        pass_end()
        team_free(&team)
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
