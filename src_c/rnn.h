/* Elman RNN kernels (docs/math.md): h_t = act(x_t.W_ihᵀ + b_ih + h_{t-1}.W_hhᵀ + b_hh), act
 * tanh or relu. Conventions in rows.h. */
#ifndef REAL
#ifndef FASTRNN_RNN_H
#define FASTRNN_RNN_H
#include "rows.h"
#define FASTRNN_BODY "rnn.h"
#include "template.h"
#endif
#else /* the body, for one REAL */

/* max(x, 0) that keeps NaN (as np.maximum does): the comparison is false for NaN. */
ROW_KERNEL void SFX(relu_row)(REAL *restrict x, int n)
{
    for (int j = 0; j < n; j++) x[j] = x[j] < 0 ? 0 : x[j];
}

/* h in: x_t.W_ihᵀ + h_{t-1}.W_hhᵀ (no bias); out: h_t = act(h + b_ih + b_hh). */
KERNEL void SFX(rnn_forward_step)(int B, int H, int64_t t, const int64_t *lengths, int relu, REAL *h,
                           const REAL *b_ih, const REAL *b_hh, const REAL *h_prev, REAL *y)
{
    for (int b = 0; b < B; b++) {
        REAL *hb = ROW(h, b, H);
        if (!VALID(b)) {
            SFX(carry_row)(H, ROW(h_prev, b, H), hb, ROW(y, b, H));
            continue;
        }
        SFX(add_row)(hb, b_ih, H);
        SFX(add_row)(hb, b_hh, H);
        if (relu)
            SFX(relu_row)(hb, H);
        else
            SFX(tanh_row)(hb, H);
        SFX(copy_row)(ROW(y, b, H), hb, H);
    }
}

/* The activation's derivative, read off its output h: relu' = [h > 0], tanh' = 1 - h^2. The
 * ReLU's is a multiplication, not a selection, so that NaN or inf in the incoming gradient
 * propagates where the unit is off, as in the reference (dh * (h > 0)). */
ROW_KERNEL void SFX(rnn_backward_row)(int H, int relu, const REAL *restrict h,
                                  const REAL *restrict dy, REAL *restrict dh,
                                  REAL *restrict dpre)
{
    if (relu) {
        for (int j = 0; j < H; j++) dpre[j] = (dy[j] + dh[j]) * (REAL)(h[j] > 0);
    } else {
        for (int j = 0; j < H; j++) dpre[j] = (dy[j] + dh[j]) * (1 - h[j] * h[j]);
    }
    SFX(zero_row)(dh, H);
}

/* h: h_t of step t; dpre out: gradient w.r.t. the pre-activation. */
KERNEL void SFX(rnn_backward_step)(int B, int H, int64_t t, const int64_t *lengths, int relu,
                            const REAL *h, const REAL *dy, REAL *dh, REAL *dpre)
{
    for (int b = 0; b < B; b++) {
        if (!VALID(b)) {
            SFX(zero_row)(ROW(dpre, b, H), H);
            continue;
        }
        SFX(rnn_backward_row)(H, relu, ROW(h, b, H), ROW(dy, b, H), ROW(dh, b, H),
                              ROW(dpre, b, H));
    }
}

#endif
