/* GRU gate kernels (docs/math.md, gate rows r, z, n): reset_after=True in one kernel per step,
 * reset_after=False in two halves around the product (r * h_{t-1}).W_hnᵀ. Conventions in
 * rows.h. */
#ifndef REAL
#ifndef FASTRNN_GRU_H
#define FASTRNN_GRU_H
#include "rows.h"
#define FASTRNN_BODY "gru.h"
#include "template.h"
#endif
#else /* the body, for one REAL */

/* g in: pre-activations of r, z with bias, of n without its W_hn part; out: activated r, z, n.
 * hn: W_hn h_{t-1} + b_hn. */
ROW_KERNEL void SFX(gru_forward_row)(int H, REAL *restrict g, const REAL *restrict hn,
                                 const REAL *restrict h_prev, REAL *restrict h,
                                 REAL *restrict y)
{
    SFX(sigmoid_row)(g, 2 * H); /* r and z in a loop of their own, so that their latencies overlap (see lstm.h) */
    {
        const REAL *restrict r = g, *restrict z = g + H;
        REAL *restrict n = g + 2 * H;
        for (int j = 0; j < H; j++) {
            n[j] = TANH(n[j] + r[j] * hn[j]);
            h[j] = (1 - z[j]) * n[j] + z[j] * h_prev[j];
            y[j] = h[j];
        }
    }
}

/* reset_after=True.  gates in: x_t.W_ihᵀ (no bias); out: activated r, z, n.
 * hproj: h_{t-1}.W_hhᵀ (no bias); hn out: W_hn h_{t-1} + b_hn, kept for backward. */
KERNEL void SFX(gru_forward_step)(int B, int H, int64_t t, const int64_t *lengths, REAL *gates,
                           const REAL *hproj, const REAL *b_ih, const REAL *b_hh,
                           const REAL *h_prev, REAL *hn, REAL *h, REAL *y)
{
    for (int b = 0; b < B; b++) {
        if (!VALID(b)) {
            SFX(carry_row)(H, ROW(h_prev, b, H), ROW(h, b, H), ROW(y, b, H));
            continue;
        }
        REAL *g = ROW(gates, b, 3 * H), *hnb = ROW(hn, b, H);
        const REAL *hp = ROW(hproj, b, 3 * H);
        SFX(add_row)(g, hp, 2 * H);
        SFX(add_row)(g, b_ih, 3 * H);
        SFX(add_row)(g, b_hh, 2 * H);
        SFX(copy_row)(hnb, hp + 2 * H, H);
        if (b_hh != NULL) SFX(add_row)(hnb, b_hh + 2 * H, H);
        SFX(gru_forward_row)(H, g, hnb, ROW(h_prev, b, H), ROW(h, b, H), ROW(y, b, H));
    }
}

ROW_KERNEL void SFX(gru_rz_row)(int H, REAL *restrict g, const REAL *restrict h_prev,
                            REAL *restrict rh)
{
    SFX(sigmoid_row)(g, 2 * H);
    for (int j = 0; j < H; j++) rh[j] = g[j] * h_prev[j];
}

/* reset_after=False, first half of the step.  gates in: x_t.W_ihᵀ + h_{t-1}.W_hhᵀ in the r, z
 * columns (no bias); out: activated r, z.  rh out: r * h_{t-1} (zero on an invalid row, so the
 * product rh.W_hnᵀ and the W_hn gradient see a zero row). */
KERNEL void SFX(gru_forward_rz_step)(int B, int H, int64_t t, const int64_t *lengths, REAL *gates,
                              const REAL *b_ih, const REAL *b_hh, const REAL *h_prev, REAL *rh)
{
    for (int b = 0; b < B; b++) {
        if (!VALID(b)) {
            SFX(zero_row)(ROW(rh, b, H), H);
            continue;
        }
        REAL *g = ROW(gates, b, 3 * H);
        SFX(add_row)(g, b_ih, 2 * H);
        SFX(add_row)(g, b_hh, 2 * H);
        SFX(gru_rz_row)(H, g, ROW(h_prev, b, H), ROW(rh, b, H));
    }
}

ROW_KERNEL void SFX(gru_n_row)(int H, REAL *restrict g, const REAL *restrict h_prev,
                           REAL *restrict h, REAL *restrict y)
{
    const REAL *restrict z = g + H;
    REAL *restrict n = g + 2 * H;
    for (int j = 0; j < H; j++) {
        n[j] = TANH(n[j]);
        h[j] = (1 - z[j]) * n[j] + z[j] * h_prev[j];
        y[j] = h[j];
    }
}

/* reset_after=False, second half.  gates in: activated r, z and x_t.W_inᵀ + (r * h_{t-1}).W_hnᵀ
 * in the n columns (no bias); out: activated r, z, n. */
KERNEL void SFX(gru_forward_n_step)(int B, int H, int64_t t, const int64_t *lengths, REAL *gates,
                             const REAL *b_ih, const REAL *b_hh, const REAL *h_prev, REAL *h,
                             REAL *y)
{
    for (int b = 0; b < B; b++) {
        if (!VALID(b)) {
            SFX(carry_row)(H, ROW(h_prev, b, H), ROW(h, b, H), ROW(y, b, H));
            continue;
        }
        REAL *g = ROW(gates, b, 3 * H);
        if (b_ih != NULL) SFX(add_row)(g + 2 * H, b_ih + 2 * H, H);
        if (b_hh != NULL) SFX(add_row)(g + 2 * H, b_hh + 2 * H, H);
        SFX(gru_n_row)(H, g, ROW(h_prev, b, H), ROW(h, b, H), ROW(y, b, H));
    }
}

ROW_KERNEL void SFX(gru_backward_row)(int H, const REAL *restrict g, const REAL *restrict hn,
                                  const REAL *restrict h_prev, const REAL *restrict dy,
                                  REAL *restrict dh, REAL *restrict dg, REAL *restrict dn)
{
    const REAL *restrict gr = g, *restrict gz = g + H, *restrict gn = g + 2 * H;
    REAL *restrict dgr = dg, *restrict dgz = dg + H, *restrict dghn = dg + 2 * H;
    for (int j = 0; j < H; j++) {
        const REAL r = gr[j], z = gz[j], n = gn[j];
        const REAL dhj = dy[j] + dh[j];
        /* h = (1 - z) * n + z * h_prev */
        const REAL dn_pre = dhj * (1 - z) * (1 - n * n);
        dgz[j] = dhj * (h_prev[j] - n) * z * (1 - z);
        /* n = tanh(x_n + r * hn) */
        dgr[j] = dn_pre * hn[j] * r * (1 - r);
        dghn[j] = dn_pre * r;
        dn[j] = dn_pre;
        dh[j] = dhj * z;
    }
}

/* reset_after=True.  gates: activated r, z, n; hn: W_hn h_{t-1} + b_hn of step t.
 * dgates out: gradient w.r.t. the pre-activations as W_hh sees them (r, z, and hn);
 * dn out: gradient w.r.t. the n pre-activation (what W_ih's n rows see). */
KERNEL void SFX(gru_backward_step)(int B, int H, int64_t t, const int64_t *lengths, const REAL *gates,
                            const REAL *hn, const REAL *h_prev, const REAL *dy, REAL *dh,
                            REAL *dgates, REAL *dn)
{
    for (int b = 0; b < B; b++) {
        if (!VALID(b)) {
            SFX(zero_row)(ROW(dgates, b, 3 * H), 3 * H);
            SFX(zero_row)(ROW(dn, b, H), H);
            continue;
        }
        SFX(gru_backward_row)(H, ROW(gates, b, 3 * H), ROW(hn, b, H), ROW(h_prev, b, H),
                              ROW(dy, b, H), ROW(dh, b, H), ROW(dgates, b, 3 * H), ROW(dn, b, H));
    }
}

ROW_KERNEL void SFX(gru_backward_nz_row)(int H, const REAL *restrict g, const REAL *restrict h_prev,
                                     const REAL *restrict dy, REAL *restrict dh,
                                     REAL *restrict dg)
{
    const REAL *restrict gz = g + H, *restrict gn = g + 2 * H;
    REAL *restrict dgz = dg + H, *restrict dgn = dg + 2 * H;
    for (int j = 0; j < H; j++) {
        const REAL z = gz[j], n = gn[j];
        const REAL dhj = dy[j] + dh[j];
        /* h = (1 - z) * n + z * h_prev */
        dgz[j] = dhj * (h_prev[j] - n) * z * (1 - z);
        dgn[j] = dhj * (1 - z) * (1 - n * n);
        dh[j] = dhj * z;
    }
}

/* reset_after=False, first half.  dgates out: the z and n columns (on an invalid row all three,
 * as zeros; the r columns of a valid row come from gru_backward_r_step). */
KERNEL void SFX(gru_backward_nz_step)(int B, int H, int64_t t, const int64_t *lengths,
                               const REAL *gates, const REAL *h_prev, const REAL *dy, REAL *dh,
                               REAL *dgates)
{
    for (int b = 0; b < B; b++) {
        if (!VALID(b)) {
            SFX(zero_row)(ROW(dgates, b, 3 * H), 3 * H);
            continue;
        }
        SFX(gru_backward_nz_row)(H, ROW(gates, b, 3 * H), ROW(h_prev, b, H), ROW(dy, b, H),
                                 ROW(dh, b, H), ROW(dgates, b, 3 * H));
    }
}

ROW_KERNEL void SFX(gru_backward_r_row)(int H, const REAL *restrict r, const REAL *restrict h_prev,
                                    const REAL *restrict drh, REAL *restrict dh,
                                    REAL *restrict dr)
{
    /* rh = r * h_prev, r = sigmoid(...) */
    for (int j = 0; j < H; j++) {
        dr[j] = drh[j] * h_prev[j] * r[j] * (1 - r[j]);
        dh[j] += drh[j] * r[j];
    }
}

/* reset_after=False, second half.  drh: gradient w.r.t. r * h_{t-1} (= dn_pre . W_hn);
 * dgates out: the r columns. */
KERNEL void SFX(gru_backward_r_step)(int B, int H, int64_t t, const int64_t *lengths,
                              const REAL *gates, const REAL *h_prev, const REAL *drh, REAL *dh,
                              REAL *dgates)
{
    for (int b = 0; b < B; b++) {
        if (!VALID(b)) continue;
        SFX(gru_backward_r_row)(H, ROW(gates, b, 3 * H), ROW(h_prev, b, H), ROW(drh, b, H),
                                ROW(dh, b, H), ROW(dgates, b, 3 * H));
    }
}

#endif
