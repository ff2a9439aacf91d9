/* LSTM gate kernels (docs/math.md): the cell with forget gate (gate rows i, f, g, o, optional
 * peepholes p_i, p_f, p_o) and the cell of Hochreiter & Schmidhuber 1997 without it (gate rows
 * i, g, o, c_t = c_{t-1} + i * g, optional peepholes p_i, p_o). Conventions in rows.h. */
#ifndef REAL
#ifndef FASTRNN_LSTM_H
#define FASTRNN_LSTM_H
#include "rows.h"
#define FASTRNN_BODY "lstm.h"
#include "template.h"
#endif
#else /* the body, for one REAL */

/* g in: pre-activations of i, f, g, o with bias; out: activated. p: peepholes (3, H). */
ROW_KERNEL void SFX(lstm_forward_row)(int H, REAL *restrict g, const REAL *restrict p,
                                         const REAL *restrict c_prev, REAL *restrict h,
                                         REAL *restrict c, REAL *restrict y)
{
    REAL *restrict gi = g, *restrict gf = g + H, *restrict gg = g + 2 * H, *restrict go = g + 3 * H;
    /* Two loops, not one: i, f and g do not depend on each other, and the CPU overlaps the long
     * latencies of their exp and division only across the iterations it holds at once. */
    for (int j = 0; j < H; j++) {
        gi[j] = SIGMOID(gi[j] + p[j] * c_prev[j]);
        gf[j] = SIGMOID(gf[j] + p[H + j] * c_prev[j]);
        gg[j] = TANH(gg[j]);
    }
    for (int j = 0; j < H; j++) {
        c[j] = gf[j] * c_prev[j] + gi[j] * gg[j];
        go[j] = SIGMOID(go[j] + p[2 * H + j] * c[j]);
        h[j] = go[j] * TANH(c[j]);
        y[j] = h[j];
    }
}

/* gates in: x_t.W_ihᵀ + h_{t-1}.W_hhᵀ (no bias); out: activated i, f, g, o.
 * w_peep: peephole weights (3, H), zeros for a cell without them (a few multiply-adds cost less
 * than a second copy of every loop). h, c: the state after step t; y: the output row. */
KERNEL void SFX(lstm_forward_step)(int B, int H, int64_t t, const int64_t *lengths, REAL *gates,
                                   const REAL *b_ih, const REAL *b_hh, const REAL *w_peep,
                                   const REAL *h_prev, const REAL *c_prev, REAL *h, REAL *c,
                                   REAL *y)
{
    for (int b = 0; b < B; b++) {
        if (!VALID(b)) {
            SFX(carry_row)(H, ROW(h_prev, b, H), ROW(h, b, H), ROW(y, b, H));
            SFX(copy_row)(ROW(c, b, H), ROW(c_prev, b, H), H);
            continue;
        }
        REAL *g = ROW(gates, b, 4 * H);
        SFX(add_row)(g, b_ih, 4 * H);
        SFX(add_row)(g, b_hh, 4 * H);
        SFX(lstm_forward_row)(H, g, w_peep, ROW(c_prev, b, H), ROW(h, b, H), ROW(c, b, H),
                              ROW(y, b, H));
    }
}

ROW_KERNEL void SFX(lstm_backward_row)(int H, const REAL *restrict g, const REAL *restrict p,
                                          const REAL *restrict c_prev, const REAL *restrict c,
                                          const REAL *restrict dy, REAL *restrict dh,
                                          REAL *restrict dc, REAL *restrict dg, int keep_dc)
{
    const REAL *restrict gi = g, *restrict gf = g + H, *restrict gg = g + 2 * H;
    const REAL *restrict go = g + 3 * H;
    REAL *restrict dgi = dg, *restrict dgf = dg + H, *restrict dgg = dg + 2 * H;
    REAL *restrict dgo = dg + 3 * H;
    for (int j = 0; j < H; j++) {
        const REAL i = gi[j], f = gf[j], gc = gg[j], o = go[j];
        const REAL tc = TANH(c[j]);
        const REAL dhj = dy[j] + dh[j];
        /* h = o * tanh(c); o = sigmoid(... + p_o * c) */
        const REAL do_pre = dhj * tc * o * (1 - o);
        const REAL dcj = dc[j] + dhj * o * (1 - tc * tc) + do_pre * p[2 * H + j];
        /* c = f * c_prev + i * g; i, f = sigmoid(... + p_i,f * c_prev); g = tanh(...) */
        const REAL di_pre = dcj * gc * i * (1 - i);
        const REAL df_pre = dcj * c_prev[j] * f * (1 - f);
        dgi[j] = di_pre;
        dgf[j] = df_pre;
        dgg[j] = dcj * i * (1 - gc * gc);
        dgo[j] = do_pre;
        dc[j] = dcj * f + di_pre * p[j] + df_pre * p[H + j];
        dh[j] = keep_dc ? dcj : 0;
    }
}

/* dpeep (3, H) += the peephole gradient of one row. */
ROW_KERNEL void SFX(lstm_peephole_grad_row)(int H, const REAL *restrict dg,
                                               const REAL *restrict c_prev,
                                               const REAL *restrict c, double *restrict dpeep)
{
    for (int j = 0; j < H; j++) {
        dpeep[j] += (double)(dg[j] * c_prev[j]);
        dpeep[H + j] += (double)(dg[H + j] * c_prev[j]);
        dpeep[2 * H + j] += (double)(dg[3 * H + j] * c[j]);
    }
}

/* gates: activated i, f, g, o of step t; c_prev, c: the cell state before and after step t;
 * w_peep as in forward. dc: like dh, for the cell state (complete: nothing of it flows through
 * W_hh). dgates out: gradient w.r.t. the gate pre-activations. dpeep (3, H): accumulates the
 * peephole gradient, or NULL to skip it. dc_sq: accumulates the squared norm of the gradient
 * w.r.t. c_t over the valid rows (the gradient-norm record), or NULL to skip it: the row
 * kernel then leaves dL/dc_t in dh, where it would write zeros, and take_sum_squares reads and
 * clears it, so the row's loop stays as vectorisable as without the record. */
KERNEL void SFX(lstm_backward_step)(int B, int H, int64_t t, const int64_t *lengths,
                                    const REAL *gates, const REAL *c_prev, const REAL *c,
                                    const REAL *w_peep, const REAL *dy, REAL *dh, REAL *dc,
                                    REAL *dgates, double *dpeep, double *dc_sq)
{
    for (int b = 0; b < B; b++) {
        REAL *dg = ROW(dgates, b, 4 * H);
        if (!VALID(b)) {
            SFX(zero_row)(dg, 4 * H);
            continue;
        }
        SFX(lstm_backward_row)(H, ROW(gates, b, 4 * H), w_peep, ROW(c_prev, b, H), ROW(c, b, H),
                               ROW(dy, b, H), ROW(dh, b, H), ROW(dc, b, H), dg, dc_sq != NULL);
        if (dc_sq != NULL)
            SFX(take_sum_squares)(ROW(dh, b, H), H, dc_sq);
        if (dpeep != NULL)
            SFX(lstm_peephole_grad_row)(H, dg, ROW(c_prev, b, H), ROW(c, b, H), dpeep);
    }
}

/* Without forget gate. g in: pre-activations of i, g, o with bias; out: activated.
 * p: peepholes (2, H), rows p_i, p_o. */
ROW_KERNEL void SFX(lstm_nf_forward_row)(int H, REAL *restrict g, const REAL *restrict p,
                                            const REAL *restrict c_prev, REAL *restrict h,
                                            REAL *restrict c, REAL *restrict y)
{
    REAL *restrict gi = g, *restrict gg = g + H, *restrict go = g + 2 * H;
    /* i and g in a loop of their own, as in lstm_forward_row */
    for (int j = 0; j < H; j++) {
        gi[j] = SIGMOID(gi[j] + p[j] * c_prev[j]);
        gg[j] = TANH(gg[j]);
    }
    for (int j = 0; j < H; j++) {
        c[j] = c_prev[j] + gi[j] * gg[j];
        go[j] = SIGMOID(go[j] + p[H + j] * c[j]);
        h[j] = go[j] * TANH(c[j]);
        y[j] = h[j];
    }
}

/* As lstm_forward_step, for the cell without forget gate: gates (B, 3H) i, g, o; w_peep (2, H),
 * zeros for a cell without peepholes. */
KERNEL void SFX(lstm_nf_forward_step)(int B, int H, int64_t t, const int64_t *lengths,
                                      REAL *gates, const REAL *b_ih, const REAL *b_hh,
                                      const REAL *w_peep, const REAL *h_prev, const REAL *c_prev,
                                      REAL *h, REAL *c, REAL *y)
{
    for (int b = 0; b < B; b++) {
        if (!VALID(b)) {
            SFX(carry_row)(H, ROW(h_prev, b, H), ROW(h, b, H), ROW(y, b, H));
            SFX(copy_row)(ROW(c, b, H), ROW(c_prev, b, H), H);
            continue;
        }
        REAL *g = ROW(gates, b, 3 * H);
        SFX(add_row)(g, b_ih, 3 * H);
        SFX(add_row)(g, b_hh, 3 * H);
        SFX(lstm_nf_forward_row)(H, g, w_peep, ROW(c_prev, b, H), ROW(h, b, H), ROW(c, b, H),
                                 ROW(y, b, H));
    }
}

ROW_KERNEL void SFX(lstm_nf_backward_row)(int H, const REAL *restrict g,
                                             const REAL *restrict p, const REAL *restrict c,
                                             const REAL *restrict dy, REAL *restrict dh,
                                             REAL *restrict dc, REAL *restrict dg, int keep_dc)
{
    const REAL *restrict gi = g, *restrict gg = g + H, *restrict go = g + 2 * H;
    REAL *restrict dgi = dg, *restrict dgg = dg + H, *restrict dgo = dg + 2 * H;
    for (int j = 0; j < H; j++) {
        const REAL i = gi[j], gc = gg[j], o = go[j];
        const REAL tc = TANH(c[j]);
        const REAL dhj = dy[j] + dh[j];
        /* h = o * tanh(c); o = sigmoid(... + p_o * c) */
        const REAL do_pre = dhj * tc * o * (1 - o);
        const REAL dcj = dc[j] + dhj * o * (1 - tc * tc) + do_pre * p[H + j];
        /* c = c_prev + i * g; i = sigmoid(... + p_i * c_prev); g = tanh(...) */
        const REAL di_pre = dcj * gc * i * (1 - i);
        dgi[j] = di_pre;
        dgg[j] = dcj * i * (1 - gc * gc);
        dgo[j] = do_pre;
        dc[j] = dcj + di_pre * p[j];
        dh[j] = keep_dc ? dcj : 0;
    }
}

/* As lstm_backward_step, for the cell without forget gate: gates, dgates (B, 3H) i, g, o;
 * w_peep and dpeep (2, H); dc_sq as there. */
KERNEL void SFX(lstm_nf_backward_step)(int B, int H, int64_t t, const int64_t *lengths,
                                       const REAL *gates, const REAL *c_prev, const REAL *c,
                                       const REAL *w_peep, const REAL *dy, REAL *dh, REAL *dc,
                                       REAL *dgates, double *dpeep, double *dc_sq)
{
    for (int b = 0; b < B; b++) {
        REAL *dg = ROW(dgates, b, 3 * H);
        if (!VALID(b)) {
            SFX(zero_row)(dg, 3 * H);
            continue;
        }
        SFX(lstm_nf_backward_row)(H, ROW(gates, b, 3 * H), w_peep, ROW(c, b, H), ROW(dy, b, H),
                                  ROW(dh, b, H), ROW(dc, b, H), dg, dc_sq != NULL);
        if (dc_sq != NULL)
            SFX(take_sum_squares)(ROW(dh, b, H), H, dc_sq);
        if (dpeep == NULL) continue;
        const REAL *restrict cp = ROW(c_prev, b, H), *restrict cb = ROW(c, b, H);
        for (int j = 0; j < H; j++) {
            dpeep[j] += (double)(dg[j] * cp[j]);
            dpeep[H + j] += (double)(dg[2 * H + j] * cb[j]);
        }
    }
}

#endif
