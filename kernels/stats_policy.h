/*
 * stats_policy.h -- the kernels of stats.h for one (storage S, arithmetic A) policy.
 * Included by stats.h once per policy with STATS_S, STATS_A (short format names), STATS_ST
 * (the C type of S's elements) and STATS_T (the C type holding values of A) defined; every
 * function is named <name>_<S>_<A>.  No include guard: that is the point.
 */
#define SP_GLUE3_(n, s, a) n##_##s##_##a
#define SP_GLUE3(n, s, a) SP_GLUE3_(n, s, a)
#define SP(name) SP_GLUE3(name, STATS_S, STATS_A)
#define SP_GLUE2_(n, a) n##_##a
#define SP_GLUE2(n, a) SP_GLUE2_(n, a)
#define ST STATS_ST
#define T STATS_T
#define LD(v) SP_GLUE3(ld, STATS_S, STATS_A)(v)          /* fp.h: exact */
#define STORE(v) SP_GLUE3(st, STATS_S, STATS_A)(v)       /* fp.h: rounded once */
#define RND(v) SP_GLUE2(rnd, STATS_A)(v)
#define FROM64(v) SP_GLUE2(from64, STATS_A)(v)

/* ------------------------------------------------------------------------------ terms */
/* The term of element i of x (and y): kind is a constant at every call site below, so the
 * branches fold away and the loops vectorise. */
static inline T SP(stats_term)(int kind, const ST* restrict x, const ST* restrict y,
                               ptrdiff_t i, T centre)
{
    T v = LD(x[i]);
    if (kind == STATS_TERM_X) return v;
    if (kind == STATS_TERM_SQ) return RND(v * v);
    T d = RND(v - centre);
    if (kind == STATS_TERM_DEV2) return RND(d * d);
    return RND(d * LD(y[i]));
}

/* ============================================= one channel through a gather (any B, any K)
 * The channel's sequence: A segments of B contiguous elements, segment a at x + a * stride. */

static T SP(stats_chan_pairwise)(int kind, const ST* x, const ST* y, ptrdiff_t A,
                                 ptrdiff_t stride, ptrdiff_t B, T centre)
{
    /* summation.h's pairwise order over the channel's terms, a leaf at a time */
    T buf[STATS_LEAF];
    T total;
    SUMMATION_TREE_DECLARE(T);
    ptrdiff_t a = 0, b = 0;
    ptrdiff_t remaining = A * B;
    while (remaining > 0) {
        ptrdiff_t m = remaining < STATS_LEAF ? remaining : STATS_LEAF;
        ptrdiff_t filled = 0;
        while (filled < m) {
            ptrdiff_t take = B - b < m - filled ? B - b : m - filled;
            const ST* xs = x + a * stride + b;
            const ST* ys = y + a * stride + b;
            switch (kind) {
            case STATS_TERM_X:
                for (ptrdiff_t i = 0; i < take; i++)
                    buf[filled + i] = SP(stats_term)(STATS_TERM_X, xs, ys, i, centre);
                break;
            case STATS_TERM_SQ:
                for (ptrdiff_t i = 0; i < take; i++)
                    buf[filled + i] = SP(stats_term)(STATS_TERM_SQ, xs, ys, i, centre);
                break;
            case STATS_TERM_DEV2:
                for (ptrdiff_t i = 0; i < take; i++)
                    buf[filled + i] = SP(stats_term)(STATS_TERM_DEV2, xs, ys, i, centre);
                break;
            default:
                for (ptrdiff_t i = 0; i < take; i++)
                    buf[filled + i] = SP(stats_term)(STATS_TERM_DEVDOT, xs, ys, i, centre);
            }
            filled += take;
            b += take;
            if (b == B) { b = 0; a++; }
        }
        SUMMATION_TREE_PUSH(T, SP_GLUE2(rnd, STATS_A), SP_GLUE2(sum_leaf, STATS_A)(buf, m));
        remaining -= m;
    }
    SUMMATION_TREE_FINISH(T, SP_GLUE2(rnd, STATS_A), total);
    return total;
}

static T SP(stats_chan_sequential)(int kind, const ST* x, const ST* y, ptrdiff_t A,
                                   ptrdiff_t stride, ptrdiff_t B, T centre, int kahan)
{
    T s = 0, c = 0;
    for (ptrdiff_t a = 0; a < A; a++) {
        const ST* xs = x + a * stride;
        const ST* ys = y + a * stride;
        for (ptrdiff_t b = 0; b < B; b++) {
            T t = SP(stats_term)(kind, xs, ys, b, centre);
            if (kahan) {
                T u = RND(t - c);
                T n = RND(s + u);
                c = RND(RND(n - s) - u);
                s = n;
            } else {
                s = RND(s + t);
            }
        }
    }
    return s;
}

/* the channel's sum of terms in `order` */
static T SP(stats_chan)(int kind, int order, const ST* x, const ST* y, ptrdiff_t A,
                        ptrdiff_t stride, ptrdiff_t B, T centre)
{
    if (order == STATS_PAIRWISE) return SP(stats_chan_pairwise)(kind, x, y, A, stride, B, centre);
    return SP(stats_chan_sequential)(kind, x, y, A, stride, B, centre, order == STATS_KAHAN);
}

static void SP(stats_chan_welford)(const ST* x, ptrdiff_t A, ptrdiff_t stride, ptrdiff_t B,
                                   T* mean_out, T* m2_out)
{
    T m = 0, m2 = 0;
    size_t k = 0;
    for (ptrdiff_t a = 0; a < A; a++) {
        const ST* xs = x + a * stride;
        for (ptrdiff_t b = 0; b < B; b++) {
            T kA = FROM64((double)++k);
            T v = LD(xs[b]);
            T d = RND(v - m);
            m = RND(m + RND(d / kA));
            m2 = RND(m2 + RND(d * RND(v - m)));
        }
    }
    *mean_out = m;
    *m2_out = m2;
}

/* ====================================================== many columns at once (B = 1)
 * x points at column c0 of row 0 of an (n, ld) matrix; columns [c0, c0 + w), w <= the block.
 * Each column's operations are exactly those of the one-sequence functions above. */

/* acc[c] = R(acc[c] + term(row, c)) for c < w */
static inline void SP(stats_cols_add_row)(int kind, T* restrict acc, const ST* restrict row,
                                          const ST* restrict yrow, const T* restrict centre,
                                          ptrdiff_t w)
{
#if STATS_F16C && STATS_F16_STRICT
    /* the 8-lane F16C version of the two kinds the two-pass variance uses (stats.h) */
    if (kind == STATS_TERM_X || kind == STATS_TERM_DEV2) {
        ptrdiff_t c0 = stats_v8_add_row_f16(acc, row, kind == STATS_TERM_X ? NULL : centre, w);
        for (ptrdiff_t c = c0; c < w; c++)
            acc[c] = RND(acc[c] + SP(stats_term)(kind, row, yrow, c,
                                                 kind == STATS_TERM_X ? 0 : centre[c]));
        return;
    }
#endif
    switch (kind) {
    case STATS_TERM_X:
        for (ptrdiff_t c = 0; c < w; c++)
            acc[c] = RND(acc[c] + SP(stats_term)(STATS_TERM_X, row, yrow, c, 0));
        break;
    case STATS_TERM_SQ:
        for (ptrdiff_t c = 0; c < w; c++)
            acc[c] = RND(acc[c] + SP(stats_term)(STATS_TERM_SQ, row, yrow, c, 0));
        break;
    case STATS_TERM_DEV2:
        for (ptrdiff_t c = 0; c < w; c++)
            acc[c] = RND(acc[c] + SP(stats_term)(STATS_TERM_DEV2, row, yrow, c, centre[c]));
        break;
    default:
        for (ptrdiff_t c = 0; c < w; c++)
            acc[c] = RND(acc[c] + SP(stats_term)(STATS_TERM_DEVDOT, row, yrow, c, centre[c]));
    }
}

/* the pairwise order across columns: lanes[j] is lane j of every column of the current leaf,
 * stack[l] level l of every column's binary counter.  A loop of its own (it vectorises across
 * columns), the same order as summation.h's sum_pairwise on each column: steps 1-4 there, the
 * tree by the same binary counter as SUMMATION_TREE_PUSH / SUMMATION_TREE_FINISH. */
static void SP(stats_cols_pairwise)(int kind, const ST* x, const ST* y, ptrdiff_t n,
                                    ptrdiff_t ld, ptrdiff_t w, const T* centre, T* out,
                                    T* scratch)
{
    T* lanes = scratch;
    T* stack = scratch + STATS_LANES * w;
    int depth = 0;
    size_t count = 0;
    for (ptrdiff_t r0 = 0; r0 < n; r0 += STATS_LEAF) {
        ptrdiff_t m = n - r0 < STATS_LEAF ? n - r0 : STATS_LEAF;
        for (ptrdiff_t c = 0; c < STATS_LANES * w; c++) lanes[c] = 0;
        for (ptrdiff_t r = 0; r < m; r++)
            SP(stats_cols_add_row)(kind, lanes + (r & (STATS_LANES - 1)) * w,
                                   x + (r0 + r) * ld, y + (r0 + r) * ld, centre, w);
        T* restrict cur = stack + depth * w;
        const T *l0 = lanes, *l1 = lanes + w, *l2 = lanes + 2 * w, *l3 = lanes + 3 * w;
        const T *l4 = lanes + 4 * w, *l5 = lanes + 5 * w, *l6 = lanes + 6 * w, *l7 = lanes + 7 * w;
        for (ptrdiff_t c = 0; c < w; c++)
            cur[c] = RND(RND(RND(l0[c] + l1[c]) + RND(l2[c] + l3[c]))
                         + RND(RND(l4[c] + l5[c]) + RND(l6[c] + l7[c])));
        for (size_t carry = count; carry & 1; carry >>= 1) {
            T* restrict left = stack + (depth - 1) * w;
            for (ptrdiff_t c = 0; c < w; c++) left[c] = RND(left[c] + cur[c]);
            cur = left;
            depth--;
        }
        depth++;
        count++;
    }
    if (depth == 0) {
        for (ptrdiff_t c = 0; c < w; c++) out[c] = 0;
        return;
    }
    for (ptrdiff_t c = 0; c < w; c++) out[c] = stack[(depth - 1) * w + c];
    for (int j = depth - 2; j >= 0; j--)
        for (ptrdiff_t c = 0; c < w; c++) out[c] = RND(stack[j * w + c] + out[c]);
}

static void SP(stats_cols_sequential)(int kind, const ST* x, const ST* y, ptrdiff_t n,
                                      ptrdiff_t ld, ptrdiff_t w, const T* centre, T* out,
                                      T* scratch, int kahan)
{
    T* restrict s = out;
    T* restrict comp = scratch;
    for (ptrdiff_t c = 0; c < w; c++) s[c] = comp[c] = 0;
    for (ptrdiff_t r = 0; r < n; r++) {
        if (!kahan) {
            SP(stats_cols_add_row)(kind, s, x + r * ld, y + r * ld, centre, w);
            continue;
        }
        T* restrict t = scratch + w;        /* this row's terms */
        for (ptrdiff_t c = 0; c < w; c++) t[c] = 0;
        SP(stats_cols_add_row)(kind, t, x + r * ld, y + r * ld, centre, w);   /* R(0 + t) = t */
        for (ptrdiff_t c = 0; c < w; c++) {
            T u = RND(t[c] - comp[c]);
            T nn = RND(s[c] + u);
            comp[c] = RND(RND(nn - s[c]) - u);
            s[c] = nn;
        }
    }
}

/* scratch the column functions need, in values of T */
static inline ptrdiff_t SP(stats_cols_scratch)(ptrdiff_t w)
{
    return (STATS_LANES + STATS_LEVELS) * w;
}

static void SP(stats_cols)(int kind, int order, const ST* x, const ST* y, ptrdiff_t n,
                           ptrdiff_t ld, ptrdiff_t w, const T* centre, T* out, T* scratch)
{
    if (order == STATS_PAIRWISE)
        SP(stats_cols_pairwise)(kind, x, y, n, ld, w, centre, out, scratch);
    else
        SP(stats_cols_sequential)(kind, x, y, n, ld, w, centre, out, scratch,
                                  order == STATS_KAHAN);
}

static void SP(stats_cols_welford)(const ST* x, ptrdiff_t n, ptrdiff_t ld, ptrdiff_t w,
                                   T* restrict mean_out, T* restrict m2_out)
{
    for (ptrdiff_t c = 0; c < w; c++) mean_out[c] = m2_out[c] = 0;
    for (ptrdiff_t r = 0; r < n; r++) {
        const ST* restrict row = x + r * ld;
        T kA = FROM64((double)(r + 1));
        for (ptrdiff_t c = 0; c < w; c++) {
            T v = LD(row[c]);
            T d = RND(v - mean_out[c]);
            T m = RND(mean_out[c] + RND(d / kA));
            mean_out[c] = m;
            m2_out[c] = RND(m2_out[c] + RND(d * RND(v - m)));
        }
    }
}

/* ================================================================ batch norm, elementwise
 * One slab a of the (A, K, B) layout: K*B elements starting at x. */
static void SP(stats_bn_forward)(const ST* restrict x, ptrdiff_t K, ptrdiff_t B,
                                 const T* restrict mu, const T* restrict s,
                                 const T* restrict g, const T* restrict bias, int affine,
                                 ST* restrict out)
{
    if (B == 1) {
        if (affine)
            for (ptrdiff_t k = 0; k < K; k++)
                out[k] = STORE(RND(RND(RND(RND(LD(x[k]) - mu[k]) * s[k]) * g[k]) + bias[k]));
        else
            for (ptrdiff_t k = 0; k < K; k++) out[k] = STORE(RND(RND(LD(x[k]) - mu[k]) * s[k]));
        return;
    }
    for (ptrdiff_t k = 0; k < K; k++) {
        const ST* restrict xs = x + k * B;
        ST* restrict os = out + k * B;
        T m = mu[k], sk = s[k], gk = g[k], bk = bias[k];
        if (affine)
            for (ptrdiff_t b = 0; b < B; b++)
                os[b] = STORE(RND(RND(RND(RND(LD(xs[b]) - m) * sk) * gk) + bk));
        else
            for (ptrdiff_t b = 0; b < B; b++) os[b] = STORE(RND(RND(LD(xs[b]) - m) * sk));
    }
}

static void SP(stats_bn_backward)(const ST* restrict dy, const ST* restrict x, ptrdiff_t K,
                                  ptrdiff_t B, const T* restrict mu, const T* restrict s,
                                  const T* restrict g, const T* restrict gm,
                                  const T* restrict kk, int training, ST* restrict dx)
{
    if (B == 1) {
        if (training)
            for (ptrdiff_t k = 0; k < K; k++)
                dx[k] = STORE(RND(RND(RND(RND(LD(dy[k]) - gm[k])
                                          - RND(RND(LD(x[k]) - mu[k]) * kk[k])) * s[k]) * g[k]));
        else
            for (ptrdiff_t k = 0; k < K; k++) dx[k] = STORE(RND(RND(LD(dy[k]) * s[k]) * g[k]));
        return;
    }
    for (ptrdiff_t k = 0; k < K; k++) {
        const ST* restrict dys = dy + k * B;
        const ST* restrict xs = x + k * B;
        ST* restrict os = dx + k * B;
        T m = mu[k], sk = s[k], gk = g[k], gmk = gm[k], kkk = kk[k];
        if (training)
            for (ptrdiff_t b = 0; b < B; b++)
                os[b] = STORE(RND(RND(RND(RND(LD(dys[b]) - gmk)
                                          - RND(RND(LD(xs[b]) - m) * kkk)) * sk) * gk));
        else
            for (ptrdiff_t b = 0; b < B; b++) os[b] = STORE(RND(RND(LD(dys[b]) * sk) * gk));
    }
}

#undef SP_GLUE3_
#undef SP_GLUE3
#undef SP
#undef SP_GLUE2_
#undef SP_GLUE2
#undef ST
#undef T
#undef LD
#undef STORE
#undef RND
#undef FROM64
#undef STATS_S
#undef STATS_A
#undef STATS_ST
#undef STATS_T
#undef STATS_F16_STRICT
