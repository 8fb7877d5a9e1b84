/*
 * losses_soft_passes.h -- the three passes of losses_soft.h, written once over an element type;
 * losses_soft.h includes it twice, after defining:
 *   LS_E       the compute type (float for the float32 and float16 policies, double for float64)
 *   LS_V       16 values of it (lsv16, ldv16), LS_LANES the 8 leaf lanes of a pairwise sum
 *   V_(op)     the vector operations on LS_V (lsv_op, ldv_op)
 *   P_(op)     the policy operations (ls_op, lsd_op: loads, stores, roundings R, exp, log1p ...)
 *   LS_FN(f)   the name of function f in this instantiation
 *   LS_FLOAT   1 for the float instantiation (float16's own steps), else 0
 * Not a header of its own: no include guard.
 */

/* pass 1: 0 if some x_i is NaN or infinite; else 1 with *a = x_k, *k the first index of the max */
LS_INLINE int LS_FN(ls_shift)(const int P, const void* x, ptrdiff_t C, LS_E* a, ptrdiff_t* k) {
    LS_V top = V_(set1)(-INFINITY);
    unsigned special = 0;
    ptrdiff_t i = 0;
    for (; i + 16 <= C; i += 16) {
        LS_V v = P_(load)(P, x, i);
        top = V_(max)(top, v);
        special |= V_(special)(v);
    }
    if (i < C) {        /* the tail as 16 lanes: +0 past the row for the check, -inf for the max */
        LS_V v = P_(load_n)(P, x, i, C - i);
        special |= V_(special)(v);
        top = V_(max)(top, V_(keep_or)(v, C - i, -INFINITY));
    }
    if (special) return 0;
    LS_E max = V_(max_value)(top);
    for (i = 0; i + 16 <= C; i += 16) {
        int j = V_(first_equal)(P_(load)(P, x, i), max);
        if (j >= 0) {
            i += j;
            break;
        }
    }
    while (P_(ld1)(P, x, i) != max) i++;
    *k = i;
    *a = P_(ld1)(P, x, i);
    return 1;
}

LS_INLINE LS_E LS_FN(ls_pass3)(const int P, const void* restrict x, const void* restrict t,
                               ptrdiff_t C, LS_E a, int smooth, LS_E c1, LS_E c2, LS_E L, LS_E D,
                               LS_E T, const int mode, LS_E scale, void* restrict g,
                               const LS_E* restrict e, LS_E* restrict tt_out) {
    LS_V av = V_(set1)(a), c1v = V_(set1)(c1), c2v = V_(set1)(c2);
    LS_V Lv = V_(set1)(L), Dv = V_(set1)(D), Tv = V_(set1)(T), sv = V_(set1)(scale);
    SUMMATION_TREE_DECLARE_AS(wsum, LS_E);
    LS_E loss;
#if !LS_FLOAT
    const int stream = mode != LOSSES_SOFT_GRAD_NONE && ((uintptr_t)g & 63) == 0;
#endif
    for (ptrdiff_t s = 0; s < C; s += SUMMATION_LEAF) {
        ptrdiff_t m = C - s < SUMMATION_LEAF ? C - s : SUMMATION_LEAF;
        LS_LANES aw = P_(lanes_zero)();
        for (ptrdiff_t i = s; i < s + m; i += 16) {
            ptrdiff_t n = s + m - i;
            LS_V z = P_(rnd)(P, V_(sub)(P_(load_any)(P, x, i, n), av));
            LS_V tv = P_(load_any)(P, t, i, n);
            if (smooth) {
                tv = P_(rnd)(P, V_(add)(P_(rnd)(P, V_(mul)(c1v, tv)), c2v));
                if (n < 16) tv = V_(keep)(tv, -1, n);
            }
            if (tt_out) P_(store_e)(tt_out, i, tv, n);   /* the targets in A, for the check */
            LS_V y = P_(rnd)(P, V_(sub)(Lv, z));
            LS_V w = LS_IS16(P) ? V_(where_nonzero)(tv, P_(rnd)(P, V_(mul)(tv, y)))
                                 : V_(times_nonzero)(tv, y);
            aw = P_(lanes)(P, aw, w);
            if (mode != LOSSES_SOFT_GRAD_NONE) {
                LS_V ev = P_(load_e)(e, i, n);
                LS_V gv = P_(rnd)(P, V_(div)(ev, Dv));
                gv = P_(rnd)(P, V_(sub)(P_(rnd)(P, V_(mul)(Tv, gv)), tv));
                if (mode == LOSSES_SOFT_GRAD_INVERSE) gv = P_(rnd)(P, V_(mul)(gv, sv));
                if (mode == LOSSES_SOFT_GRAD_DIVIDE) gv = P_(rnd)(P, V_(div)(gv, sv));
#if !LS_FLOAT
                if (n >= 16 && stream) P_(stream16)(g, i, gv);  /* float64: see the top */
                else
#endif
                P_(store_any)(P, g, i, gv, n);
            }
        }
        SUMMATION_TREE_PUSH_AS(wsum, LS_E, LS_RND_P, P_(leaf_sum)(P, aw));
    }
    SUMMATION_TREE_FINISH_AS(wsum, LS_E, LS_RND_P, loss);
#if !LS_FLOAT
    if (stream) _mm_sfence();   /* the streamed stores before anything after them (g_k, ...) */
#endif
    return loss;
}

/* The row, policy P.  See losses_soft_row_f32 in losses_soft.h. */
LS_INLINE int LS_FN(ls_row)(const int P, const void* restrict x, const void* restrict t,
                            ptrdiff_t C, int smooth, LS_E c1, LS_E c2, int grad_mode,
                            LS_E grad_scale, void* restrict g, LS_E* restrict e, int validate,
                            unsigned char* code, double tolerance, const float* table,
                            const void* next_x, const void* next_t, LS_E* restrict tt_out,
                            double* state, LS_E* loss) {
    LS_E a;
    ptrdiff_t k;
    if (!LS_FN(ls_shift)(P, x, C, &a, &k)) return 0;
    if (!LS_S16(P) && validate && smooth) {    /* the check reads t, the sums below t' */
        int flags;
        double total = P_(check_row)(t, C, &flags);
        *code = losses_probs_code(flags, total, tolerance);
    }
    LS_V av = V_(set1)(a), c1v = V_(set1)(c1), c2v = V_(set1)(c2);
    LS_V tmin = V_(set1)(0);
    V_(exp_table) tab = V_(exp_table_load)();
    SUMMATION_TREE_DECLARE_AS(esum, LS_E);
    SUMMATION_TREE_DECLARE_AS(tsum, LS_E);
#if LS_FLOAT
    SUMMATION_TREE_DECLARE_AS(csum, float);    /* float16: the check's float sum of t */
#endif
    for (ptrdiff_t s = 0; s < C; s += SUMMATION_LEAF) {
        ptrdiff_t m = C - s < SUMMATION_LEAF ? C - s : SUMMATION_LEAF;
        LS_LANES ae = P_(lanes_zero)(), at = ae;
#if LS_FLOAT
        LS_LANES ac = ae;
#endif
        for (ptrdiff_t i = s; i < s + m; i += 16) {
            ptrdiff_t n = s + m - i, kr = k - i;
#if !LS_FLOAT
            if (next_x) {   /* float64: the next row's lines, fetched while the exps compute */
                _mm_prefetch((const char*)((const LS_E*)next_x + i), _MM_HINT_T0);
                _mm_prefetch((const char*)((const LS_E*)next_x + i + 8), _MM_HINT_T0);
                _mm_prefetch((const char*)((const LS_E*)next_t + i), _MM_HINT_T0);
                _mm_prefetch((const char*)((const LS_E*)next_t + i + 8), _MM_HINT_T0);
            }
#endif
            LS_V z = P_(rnd)(P, V_(sub)(P_(load_any)(P, x, i, n), av));
            LS_V ev = P_(exp)(P, z, &tab, table);
            P_(store_e)(e, i, ev, n);
            LS_V tv = P_(load_any)(P, t, i, n);
            tmin = V_(min)(tmin, tv);
#if LS_FLOAT
            if (LS_S16(P)) ac = lsv_lanes(ac, tv, ls_round_none);
#endif
            if (smooth) tv = P_(rnd)(P, V_(add)(P_(rnd)(P, V_(mul)(c1v, tv)), c2v));
            if (n < 16 || (kr >= 0 && kr < 16)) {
                ev = V_(keep)(ev, kr, n);
                tv = V_(keep)(tv, kr, n);
            }
            ae = P_(lanes)(P, ae, ev);
            at = P_(lanes)(P, at, tv);
        }
#if LS_FLOAT
        if (LS_S16(P)) SUMMATION_TREE_PUSH_AS(csum, float, LS_RND_F32, ls_leaf_sum(LS_F32, ac));
#endif
        SUMMATION_TREE_PUSH_AS(esum, LS_E, LS_RND_P, P_(leaf_sum)(P, ae));
        SUMMATION_TREE_PUSH_AS(tsum, LS_E, LS_RND_P, P_(leaf_sum)(P, at));
    }
    LS_E total, Tk;
    SUMMATION_TREE_FINISH_AS(esum, LS_E, LS_RND_P, total);
    SUMMATION_TREE_FINISH_AS(tsum, LS_E, LS_RND_P, Tk);
    LS_E tk = P_(ld1)(P, t, k);
    if (smooth) tk = P_(rnd1)(P, P_(rnd1)(P, c1 * tk) + c2);
    LS_E T = P_(rnd1)(P, Tk + tk);
#if LS_FLOAT
    if (LS_S16(P)) {
        if (!(T - T == 0)) return 0;    /* a NaN or infinite target (see the top): the row code */
        if (validate) {
            float check;
            SUMMATION_TREE_FINISH_AS(csum, float, LS_RND_F32, check);
            *code = losses_probs_code(lsv_min_value(tmin) < 0 ? PROBS_FLAG_NEGATIVE : 0, check,
                                      tolerance);
        }
    } else
#endif
    if (validate && !smooth) {
        /* the margin M of the float sum T from the tolerance (the top of losses_soft.h) */
        double margin = P == LS_F64
            ? (double)(pairwise_depth(C) + 3) * 0x1p-51 * fabs((double)T) + 0x1p-50
            : (double)(pairwise_depth(C) + 3) * 0x1p-23 * fabs((double)T) + 0x1p-50;
        double off = fabs((double)T - 1.0) - tolerance;
        if (T - T == 0 && fabs(off) > margin)
            *code = V_(min_value)(tmin) < 0 ? PROBS_NEGATIVE : (off > 0 ? PROBS_SUM_OFF : PROBS_OK);
        else {
            int flags;
            double sum = P_(check_row)(t, C, &flags);
            *code = losses_probs_code(flags, sum, tolerance);
        }
    }
    LS_E L = P_(log1p)(P, total), D = P_(rnd1)(P, 1 + total);
    LS_E gk = P_(rnd1)(P, P_(rnd1)(P, Tk - P_(rnd1)(P, tk * total)) / D);
    LS_E loss_row;
    switch (grad_mode) {
    case LOSSES_SOFT_GRAD_ONE:
        loss_row = LS_FN(ls_pass3)(P, x, t, C, a, smooth, c1, c2, L, D, T, LOSSES_SOFT_GRAD_ONE,
                            grad_scale, g, e, tt_out);
        break;
    case LOSSES_SOFT_GRAD_INVERSE:
        loss_row = LS_FN(ls_pass3)(P, x, t, C, a, smooth, c1, c2, L, D, T, LOSSES_SOFT_GRAD_INVERSE,
                            grad_scale, g, e, tt_out);
        gk = P_(rnd1)(P, gk * grad_scale);
        break;
    case LOSSES_SOFT_GRAD_DIVIDE:
        loss_row = LS_FN(ls_pass3)(P, x, t, C, a, smooth, c1, c2, L, D, T, LOSSES_SOFT_GRAD_DIVIDE,
                            grad_scale, g, e, tt_out);
        gk = P_(rnd1)(P, gk / grad_scale);
        break;
    default:
        loss_row = LS_FN(ls_pass3)(P, x, t, C, a, smooth, c1, c2, L, D, T, LOSSES_SOFT_GRAD_NONE,
                            grad_scale, g, e, tt_out);
    }
    if (grad_mode != LOSSES_SOFT_GRAD_NONE) P_(st1)(P, g, k, gk);
    if (state) {    /* what the refinement check of the row code reads (losses.pyx.tp) */
        state[0] = (double)a;
        state[1] = (double)k;
        state[2] = (double)total;
        state[3] = (double)Tk;
        state[4] = (double)tk;
        state[5] = (double)D;
        state[6] = (double)T;
    }
    *loss = loss_row;
    return 1;
}

