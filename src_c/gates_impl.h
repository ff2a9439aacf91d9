/* Body of the gate kernels, written once for a scalar type (see gates.h for the contract).
 *
 * gates.c includes this file twice, with REAL = float, SFX(name) = name##_f and with
 * REAL = double, SFX(name) = name##_d, after defining SFX(act_sigmoid), SFX(act_tanh) and
 * KERNEL (the attribute of the exported functions).
 *
 * Each exported step kernel loops over the B rows of one time step, handles masking, and hands
 * the valid rows to a row kernel: the maths of one sequence at one step, as loops over j < H on
 * contiguous rows. Row kernels take every row as a restrict parameter, which is what lets the
 * compiler vectorise their loops (activation functions included, see gates.c).
 * dh (and dc) come in as the gradient w.r.t. the state after step t and leave as the part of the
 * gradient w.r.t. the state before step t that does not flow through W_hh: the caller then adds
 * dgates . W_hh with one matrix product.
 */

#define VALID(b) (lengths == NULL || t < lengths[b])
#define SIGMOID SFX(act_sigmoid)
#define TANH SFX(act_tanh)
#define ROW(p, b, width) ((p) + (size_t)(b) * (width))

static inline void SFX(copy_row)(REAL *restrict dst, const REAL *restrict src, int n)
{
    for (int j = 0; j < n; j++) dst[j] = src[j];
}

static inline void SFX(zero_row)(REAL *restrict dst, int n)
{
    for (int j = 0; j < n; j++) dst[j] = 0;
}

/* dst += src, skipped when src is NULL (a layer without bias). */
static inline void SFX(add_row)(REAL *restrict dst, const REAL *restrict src, int n)
{
    if (src == NULL) return;
    for (int j = 0; j < n; j++) dst[j] += src[j];
}

static inline void SFX(sigmoid_row)(REAL *restrict x, int n)
{
    for (int j = 0; j < n; j++) x[j] = SIGMOID(x[j]);
}

static inline void SFX(tanh_row)(REAL *restrict x, int n)
{
    for (int j = 0; j < n; j++) x[j] = TANH(x[j]);
}

/* An invalid row in forward: the state is carried over, the output is zero. */
static inline void SFX(carry_row)(int H, const REAL *restrict h_prev, REAL *restrict h, REAL *restrict y)
{
    SFX(copy_row)(h, h_prev, H);
    SFX(zero_row)(y, H);
}

/* ---------------------------------------------------------------------------------------------
 * LSTM
 */

/* g in: pre-activations of i, f, g, o with bias; out: activated. p: peepholes (3, H). */
static inline void SFX(lstm_forward_row)(int H, REAL *restrict g, const REAL *restrict p,
                                  const REAL *restrict c_prev, REAL *restrict h,
                                  REAL *restrict c, REAL *restrict y)
{
    REAL *restrict gi = g, *restrict gf = g + H, *restrict gg = g + 2 * H, *restrict go = g + 3 * H;
    /* Two loops, not one: i, f and g do not depend on each other, and the CPU overlaps the long
     * latencies of their exp and division only across iterations it holds at once (one step of
     * 8 rows, H = 64: 1.39 -> 1.09 us). */
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
                            const REAL *h_prev, const REAL *c_prev, REAL *h, REAL *c, REAL *y)
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

static inline void SFX(lstm_backward_row)(int H, const REAL *restrict g, const REAL *restrict p,
                                   const REAL *restrict c_prev, const REAL *restrict c,
                                   const REAL *restrict dy, REAL *restrict dh, REAL *restrict dc,
                                   REAL *restrict dg)
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
        dh[j] = 0;
    }
}

/* dpeep (3, H) += the peephole gradient of one row. */
static inline void SFX(lstm_peephole_grad_row)(int H, const REAL *restrict dg,
                                        const REAL *restrict c_prev, const REAL *restrict c,
                                        double *restrict dpeep)
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
 * peephole gradient, or NULL to skip it. */
KERNEL void SFX(lstm_backward_step)(int B, int H, int64_t t, const int64_t *lengths, const REAL *gates,
                             const REAL *c_prev, const REAL *c, const REAL *w_peep,
                             const REAL *dy, REAL *dh, REAL *dc, REAL *dgates, double *dpeep)
{
    for (int b = 0; b < B; b++) {
        REAL *dg = ROW(dgates, b, 4 * H);
        if (!VALID(b)) {
            SFX(zero_row)(dg, 4 * H);
            continue;
        }
        SFX(lstm_backward_row)(H, ROW(gates, b, 4 * H), w_peep, ROW(c_prev, b, H), ROW(c, b, H),
                               ROW(dy, b, H), ROW(dh, b, H), ROW(dc, b, H), dg);
        if (dpeep != NULL)
            SFX(lstm_peephole_grad_row)(H, dg, ROW(c_prev, b, H), ROW(c, b, H), dpeep);
    }
}

/* ---------------------------------------------------------------------------------------------
 * GRU
 */

/* g in: pre-activations of r, z with bias, of n without its W_hn part; out: activated r, z, n.
 * hn: W_hn h_{t-1} + b_hn. */
static inline void SFX(gru_forward_row)(int H, REAL *restrict g, const REAL *restrict hn,
                                 const REAL *restrict h_prev, REAL *restrict h,
                                 REAL *restrict y)
{
    SFX(sigmoid_row)(g, 2 * H); /* r and z in a loop of their own, as in lstm_forward_row */
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

static inline void SFX(gru_rz_row)(int H, REAL *restrict g, const REAL *restrict h_prev,
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

static inline void SFX(gru_n_row)(int H, REAL *restrict g, const REAL *restrict h_prev,
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

static inline void SFX(gru_backward_row)(int H, const REAL *restrict g, const REAL *restrict hn,
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

static inline void SFX(gru_backward_nz_row)(int H, const REAL *restrict g, const REAL *restrict h_prev,
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

static inline void SFX(gru_backward_r_row)(int H, const REAL *restrict r, const REAL *restrict h_prev,
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

/* ---------------------------------------------------------------------------------------------
 * Elman RNN
 */

static inline void SFX(relu_row)(REAL *restrict x, int n)
{
    for (int j = 0; j < n; j++) x[j] = x[j] > 0 ? x[j] : 0;
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

/* The activation's derivative, read off its output h: relu' = [h > 0], tanh' = 1 - h^2. */
static inline void SFX(rnn_backward_row)(int H, int relu, const REAL *restrict h,
                                  const REAL *restrict dy, REAL *restrict dh,
                                  REAL *restrict dpre)
{
    if (relu) {
        for (int j = 0; j < H; j++) dpre[j] = h[j] > 0 ? dy[j] + dh[j] : 0;
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

/* ---------------------------------------------------------------------------------------------
 * Helpers of the Cython layer
 */

static inline void SFX(colsum_row)(int n, const REAL *restrict a, double *restrict acc)
{
    for (int j = 0; j < n; j++) acc[j] += (double)a[j];
}

/* acc[j] += sum over the rows i of a[i, j], j < n, summed in double. */
KERNEL void SFX(colsum)(int64_t rows, int n, const REAL *a, int64_t lda, double *acc)
{
    for (int64_t i = 0; i < rows; i++) SFX(colsum_row)(n, ROW(a, i, lda), acc);
}

#undef VALID
#undef SIGMOID
#undef TANH
#undef ROW
