// The probes' arithmetic (probes/stats.h) against values worked out by hand.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "probes/catalogue.h"
#include "probes/leaf.h"
#include "probes/partials.h"
#include "probes/probes.h"
#include "probes/stats.h"
#include "probes/tensor_rows.h"
#include "testing.h"

static void test_stats_sums_hand_values(void **state)
{
    (void)state;
    // 11 values: one full lane block of 8 and a tail of 3
    const float x[11] = {1, -2, 3, -4, 5, -6, 7, -8, 9, -10, 0.5f};
    expect_near(stats_sum(x, 11), -4.5, 0.0);
    expect_near(stats_sumsq(x, 11), 385.25, 0.0); // 1² + … + 10² = 385, + 0.25
    expect_near(stats_sumsq(x, 0), 0.0, 0.0);
    expect_near(stats_rms(385.25, 11), sqrt(385.25 / 11), 1e-15);
    expect_near(stats_rms(1.0, 0), 0.0, 0.0);
    assert_int_equal(stats_count_below(x, 11, 0.5f), 5); // −2, −4, −6, −8, −10
    assert_int_equal(stats_count_below(x, 11, 0.6f), 6);
    const float nan_in[3] = {NAN, -1, 2};
    assert_int_equal(stats_count_below(nan_in, 3, 0.0f), 1);
    assert_true(isnan(stats_sumsq(nan_in, 3)));
    expect_near(stats_absmax(x, 11), 10.0, 0.0); // −10, in a lane of the first block
    expect_near(stats_absmax(x + 8, 3), 10.0, 0.0);
    expect_near(stats_absmax(x, 0), 0.0, 0.0);
    float late_nan[11];
    memcpy(late_nan, x, sizeof(x));
    late_nan[10] = NAN; // in the tail, after the maximum: still NaN
    assert_true(isnan(stats_absmax(late_nan, 11)));
    assert_true(isnan(stats_absmax(nan_in, 3)));
}

// A double sum in one accumulator loses the small terms after a large one; the eight lanes
// keep the order fixed (lane l takes the entries i ≡ l mod 8 in turn, the tail goes to lane 0,
// then ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))), so the result is the same for the same
// input on any thread count. The data make the order visible: 1e4² = 1e8 first, then terms of
// 1e-16 relative to it, which one running sum drops and the lanes partly keep.
static void test_stats_sumsq_fixed_order(void **state)
{
    (void)state;
    enum { N = 1003 };
    float x[N];
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0}, serial = 0.0;
    for (int i = 0; i < N; i++)
        x[i] = i == 0 ? 1e4f : 1e-4f * (float)(1 + i % 5);
    for (int i = 0; i < N; i++) {
        double sq = (double)x[i] * (double)x[i];
        lane[i < N - N % 8 ? i % 8 : 0] += sq;
        serial += sq;
    }
    double want =
        ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
    double got = stats_sumsq(x, N);
    assert_memory_equal(&got, &want, sizeof(got));
    assert_true(serial != want); // the data tell the two orders apart
}

// Welford: the sample {2, 4, 4, 4, 5, 5, 7, 9} has mean 5, population variance 4 (std 2) and
// sample variance 32/7.
static void test_stats_moments_hand_values(void **state)
{
    (void)state;
    const float x[8] = {2, 4, 4, 4, 5, 5, 7, 9};
    struct stats_moments m;
    stats_moments_of(&m, x, 8);
    expect_near(m.n, 8.0, 0.0);
    expect_near(m.mean, 5.0, 1e-15);
    expect_near(m.m2, 32.0, 1e-13);
    expect_near(stats_moments_std(&m), 2.0, 1e-15);
    expect_near(stats_moments_sample_std(&m), sqrt(32.0 / 7.0), 1e-15);
    const float bad[3] = {1, NAN, 2}; // a NaN log Z must reach the row
    struct stats_moments nan_m;
    stats_moments_of(&nan_m, bad, 3);
    assert_true(isnan(stats_moments_std(&nan_m)) && isnan(stats_moments_sample_std(&nan_m)));
    struct stats_moments empty;
    stats_moments_of(&empty, x, 0);
    expect_near(stats_moments_std(&empty), 0.0, 0.0);
    expect_near(stats_moments_sample_std(&empty), 0.0, 0.0);
}

// Merging the moments of parts gives the moments of the whole, for any split; and an empty side
// changes nothing.
static void test_stats_moments_merge_equals_whole(void **state)
{
    (void)state;
    const float x[8] = {2, 4, 4, 4, 5, 5, 7, 9};
    for (int cut = 0; cut <= 8; cut++) {
        struct stats_moments a, b;
        stats_moments_of(&a, x, (size_t)cut);
        stats_moments_of(&b, x + cut, (size_t)(8 - cut));
        stats_moments_merge(&a, &b);
        expect_near(a.n, 8.0, 0.0);
        expect_near(a.mean, 5.0, 1e-14);
        expect_near(a.m2, 32.0, 1e-12);
    }
}

// Log Z sits near ln V with a spread of hundredths: Σx²/n − mean² cancels catastrophically in
// float-sized data, Welford keeps the spread. Values 5.545 ± 0.001 (mean 5.545, std 0.001).
static void test_stats_moments_small_spread(void **state)
{
    (void)state;
    enum { N = 4096 };
    float *x = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++)
        x[i] = 5.545f + (i % 2 ? 0.001f : -0.001f);
    struct stats_moments m;
    stats_moments_of(&m, x, N);
    double want = 0.0; // the std of the float values as stored
    for (int i = 0; i < N; i++)
        want += ((double)x[i] - m.mean) * ((double)x[i] - m.mean);
    want = sqrt(want / N);
    expect_near(stats_moments_std(&m), want, 1e-9 * want);
    free(x);
}

// Spike z: window {1, 2, 3, 4, 5} has mean 3 and sample std sqrt(2.5); x = 8 is 5/sqrt(2.5) above.
static void test_stats_spike_z_hand_values(void **state)
{
    (void)state;
    const double win[5] = {1, 2, 3, 4, 5}, flat[3] = {2, 2, 2};
    double z = -1.0;
    assert_true(stats_spike_z(win, 5, 8.0, &z));
    expect_near(z, 5.0 / sqrt(2.5), 1e-14);
    assert_false(stats_spike_z(flat, 3, 9.0, &z));
    expect_near(z, 0.0, 0.0);
    assert_false(stats_spike_z(win, 1, 9.0, &z));
}

// A layout of one of each kind: sums fold by addition, maxima by max (NaN sticky), moments by
// Chan's merge; the identity leaves a single record unchanged.
static void test_partials_fold_each_kind(void **state)
{
    (void)state;
    struct partial_layout l;
    partial_layout_init(&l);
    int s = partial_layout_add(&l, PARTIAL_SUM, 2), m = partial_layout_add(&l, PARTIAL_MAX, 2);
    int z = partial_layout_add(&l, PARTIAL_MOMENTS, 1), e = partial_layout_add(&l, PARTIAL_SUM, 0);
    assert_int_equal(l.size, 2 + 2 + 3);
    assert_int_equal(e, l.size);
    // three leaves; the moments are of {1, 3}, {5} and {} (mean 3, m2 = 8 over n = 3)
    double recs[3][7] = {
        {1, 10, -5, 2, 2, 2, 2}, {2, 20, -7, NAN, 1, 5, 0}, {4, 40, -1, 1, 0, 0, 0}};
    double out[7];
    partials_combine(&l, &recs[0][0], 7, 3, out);
    expect_near(out[s], 7.0, 0.0);
    expect_near(out[s + 1], 70.0, 0.0);
    expect_near(out[m], -1.0, 0.0);
    assert_true(isnan(out[m + 1])); // a NaN in any leaf reaches the row
    expect_near(out[z], 3.0, 0.0);
    expect_near(out[z + 1], 3.0, 1e-15);
    expect_near(out[z + 2], 8.0, 1e-14);
    partials_combine(&l, &recs[2][0], 7, 1, out);
    for (int i = 0; i < 7; i++)
        expect_near(out[i], recs[2][i], 0.0);
    partial_identity(&l, out);
    assert_true(isinf(out[m]) && out[m] < 0);
    expect_near(out[s], 0.0, 0.0);
    expect_near(out[z], 0.0, 0.0);
}

// The fold's order is the leaves' order: the same records give the same bits however they were
// produced (that is all deterministic mode needs); a maximum is the same for any order.
static void test_partials_same_records_same_bits(void **state)
{
    (void)state;
    struct partial_layout l;
    partial_layout_init(&l);
    partial_layout_add(&l, PARTIAL_SUM, 1);
    partial_layout_add(&l, PARTIAL_MAX, 1);
    double recs[4][2] = {{0.1, 3}, {1e16, 9}, {-1e16, 4}, {0.7, 1}}, rev[4][2], a[2], b[2], c[2];
    for (int k = 0; k < 4; k++)
        rev[k][0] = recs[3 - k][0], rev[k][1] = recs[3 - k][1];
    partials_combine(&l, &recs[0][0], 2, 4, a);
    partials_combine(&l, &recs[0][0], 2, 4, b);
    partials_combine(&l, &rev[0][0], 2, 4, c);
    assert_memory_equal(a, b, sizeof(a));
    expect_near(a[1], 9.0, 0.0);
    expect_near(c[1], 9.0, 0.0);
    expect_near(a[0], 0.7, 1e-12); // ((0.1 + 1e16) − 1e16) + 0.7 in double: 0.1 is lost
    expect_near(c[0], 0.1, 1e-12); // in reverse 0.7 is lost: order matters, so it is fixed
}

// Rows from folded records, for 2 layers × 1 head, one MoE block of 2 experts, MLA latents, and
// a global batch of 4 tokens, all worked by hand.
static void test_leaf_rows_hand_values(void **state)
{
    (void)state;
    struct probe_leaf pl;
    probe_leaf_init(&pl, 2, 1, 1, 2, 1, 0);
    assert_int_equal(pl.q_latent_sumsq, -1);
    double every[64], step[64];
    assert_true(pl.every.size <= 64 && pl.step.size <= 64);
    const float logz[4] = {1, 2, 3, 6};                     // mean 3, population std sqrt(3.5)
    probe_leaf_output(&pl, every, logz, 4, 4.0 * 8 * 9.0);  // logits of RMS 3 over V = 8
    every[pl.moe_chosen] = 6, every[pl.moe_chosen + 1] = 2; // 4 tokens × top-2 = 8 choices
    step[pl.attn_max] = 7.5, step[pl.attn_max + 1] = 2.0;
    step[pl.attn_entropy] = 2.0, step[pl.attn_entropy + 1] = 4.0; // Σ over 4 query rows
    step[pl.q_sumsq] = 4 * 2 * 4.0, step[pl.q_sumsq + 1] = 0.0;   // d_qk = 2, RMS 2 and 0
    step[pl.k_sumsq] = 4 * 2 * 1.0, step[pl.k_sumsq + 1] = 4 * 2 * 9.0;
    step[pl.resid_sumsq] = 4 * 3 * 1.0, step[pl.resid_sumsq + 1] = 4 * 3 * 16.0; // C = 3
    step[pl.kv_latent_sumsq] = 4 * 5 * 0.25, step[pl.kv_latent_sumsq + 1] = 0.0; // d_c = 5
    step[pl.moe_kept] = 3, step[pl.moe_kept + 1] = 2;
    step[pl.moe_z] = 4 * 1.5, step[pl.moe_entropy] = 4 * 0.5;
    every[pl.logit_max] = 2.5;
    struct probe_leaf_norms nm = {4.0, 8, 2, 3, 5, 0, 2, 5.0 /* attn_softcap */, 2.0};
    double lm, ls, lx, lr, mx[2], en[2], qr[2], kr[2], rr[2], kv[2], load[2], drop[2], rz, re;
    double om, omc, mxc[2];
    struct probe_leaf_rows rows = {.logz_mean = &lm,
                                   .logz_std = &ls,
                                   .logz_max = &lx,
                                   .logit_rms = &lr,
                                   .logit_max = &om,
                                   .logit_max_capped = &omc,
                                   .attn_max_capped = mxc,
                                   .attn_max = mx,
                                   .attn_entropy = en,
                                   .attn_q_rms = qr,
                                   .attn_k_rms = kr,
                                   .resid_rms = rr,
                                   .kv_latent_rms = kv,
                                   .moe_load = load,
                                   .moe_dropped = drop,
                                   .moe_router_z = &rz,
                                   .moe_entropy = &re};
    probe_leaf_rows(&pl, every, step, &nm, &rows);
    // the raw maxima, and as the capped softmax and loss see them: c tanh(x / c)
    expect_near(om, 2.5, 0.0);
    expect_near(omc, 2.0 * tanh(2.5 / 2.0), 1e-15);
    expect_near(mxc[0], 5.0 * tanh(7.5 / 5.0), 1e-15);
    expect_near(mxc[1], 5.0 * tanh(2.0 / 5.0), 1e-15);
    expect_near(lm, 3.0, 1e-15);
    expect_near(ls, sqrt(3.5), 1e-15);
    expect_near(lx, 6.0, 0.0);
    expect_near(lr, 3.0, 1e-15);
    expect_near(mx[0], 7.5, 0.0);
    expect_near(mx[1], 2.0, 0.0);
    expect_near(en[0], 0.5, 0.0);
    expect_near(en[1], 1.0, 0.0);
    expect_near(qr[0], 2.0, 1e-15);
    expect_near(qr[1], 0.0, 0.0);
    expect_near(kr[0], 1.0, 1e-15);
    expect_near(kr[1], 3.0, 1e-15);
    expect_near(rr[0], 1.0, 1e-15);
    expect_near(rr[1], 4.0, 1e-15);
    expect_near(kv[0], 0.5, 1e-15);
    expect_near(load[0], 0.75, 0.0);
    expect_near(load[1], 0.25, 0.0);
    expect_near(drop[0], 0.5, 0.0); // 3 of 6 kept
    expect_near(drop[1], 0.0, 0.0);
    expect_near(rz, 1.5, 0.0);
    expect_near(re, 0.5, 0.0);
    // off a probe step only the output rows are written
    mx[0] = -1.0;
    probe_leaf_rows(&pl, every, NULL, &nm, &rows);
    expect_near(mx[0], -1.0, 0.0);
}

// The catalogue is in enum order with unique names, and a run gets exactly the probes its model
// and optimizer have.
static void test_catalogue_and_features(void **state)
{
    (void)state;
    for (int i = 0; i < PROBE_IDS; i++) {
        assert_int_equal(probe_catalogue[i].id, i);
        assert_true(strlen(probe_catalogue[i].description) > 10);
        assert_true(strlen(probe_catalogue[i].description) < 360);
        for (int j = 0; j < i; j++)
            assert_string_not_equal(probe_catalogue[i].name, probe_catalogue[j].name);
    }
    struct probe_set ps;
    struct probe_features dense = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
                          all = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    probe_set_init(&ps, 2, 3, 5, 10);
    probe_set_moe(&ps, 1, 4);
    probe_set_register(&ps, &dense);
    assert_true(probe_has(&ps, PROBE_ATTN_MAX_LOGIT));
    assert_false(probe_has(&ps, PROBE_MOE_LOAD));
    assert_null(probe_row(&ps, PROBE_MUON_ORTHO));
    assert_null(probe_row(&ps, PROBE_KV_LATENT_RMS));
    assert_null(probe_row(&ps, PROBE_ATTN_MAX_LOGIT_CAPPED));
    assert_null(probe_row(&ps, PROBE_LOGIT_MAX_CAPPED));
    assert_null(probe_row(&ps, PROBE_QK_CLIP_ETA));
    assert_null(probe_row(&ps, PROBE_STABLE_FACTOR));
    assert_null(probe_row(&ps, PROBE_GUARD_SKIP));
    assert_null(probe_row(&ps, PROBE_UPDATE_CLIP));
    assert_true(probe_has(&ps, PROBE_LOGIT_MAX));
    probe_row(&ps, PROBE_ATTN_MAX_LOGIT)[2 * 3 - 1] = 1.0; // [layers, heads] fits
    probe_set_free(&ps);
    probe_set_init(&ps, 2, 3, 5, 10);
    probe_set_moe(&ps, 1, 4);
    probe_set_register(&ps, &all);
    assert_int_equal(ps.n, PROBE_IDS);
    probe_row(&ps, PROBE_MOE_LOAD)[4 - 1] = 1.0; // [MoE blocks, experts]
    probe_row(&ps, PROBE_GRAD_RMS)[5 - 1] = 1.0; // [tensors]
    probe_set_free(&ps);
}

// Two tensors of 4 entries: an AdamW one and a Muon one, worked by hand. β₂ = 0.5 at t = 1, so
// v̂ = 2v; ε = 0.5, so sqrt(v̂) < ε ⇔ v < 0.125.
static void test_tensor_rows_hand_values(void **state)
{
    (void)state;
    const size_t off[2] = {0, 4}, size[2] = {4, 4};
    const double gsq[2] = {4 * 9.0, 0.0};
    const float params[8] = {1, -1, 1, -1, 2, 2, 2, 2};
    const float update[8] = {0.5f, 0.5f, -0.5f, -0.5f, 0, 0, 0, 0};
    // one at 0 and 0.1 are below the bound, while 0.2 is below the bounds a missing (ε² = 0.25)
    // or inverted (ε²/bc = 0.5) bias correction would give
    const float v[8] = {0, 0.1f, 0.2f, 0.5f, 9, 9, 9, 9};
    const int muon[2] = {0, 1};
    const float mom[8] = {0, 0, 0, 0, 3, -3, 3, -3};
    const double ortho[2] = {0, 0.25};
    struct probe_tensor_in in = {2, off, size, gsq,  params, update, v,
                                 1, 0.5, 0.5,  muon, mom,    ortho,  0};
    double g[2], p[2], u[2], sv[2], ef[2], vz[2], mo[2], mm[2];
    struct probe_tensor_out out = {g, p, u, sv, ef, vz, mo, mm};
    probe_tensor_rows(&in, &out);
    expect_near(g[0], 3.0, 1e-15);
    expect_near(g[1], 0.0, 0.0);
    expect_near(p[0], 1.0, 1e-15);
    expect_near(p[1], 2.0, 1e-15);
    expect_near(u[0], 0.5, 1e-15);
    expect_near(sv[0], sqrt(2.0 * (0.1 + 0.2 + 0.5) / 4), 1e-7); // sqrt(mean v̂)
    expect_near(ef[0], 0.5, 0.0);                                // v = 0 and v = 0.1 of the 4
    expect_near(vz[0], 0.25, 0.0);
    expect_near(sv[1], 0.0, 0.0); // Muon's tensor: AdamW's statistics do not apply
    expect_near(ef[1], 0.0, 0.0);
    expect_near(mo[0], 0.0, 0.0);
    expect_near(mo[1], 0.25, 0.0);
    expect_near(mm[1], 3.0, 1e-15);
    // a skipped step computed no update; before the first update nothing is divided by 0
    in.skipped = 1;
    in.adam_t = 0;
    probe_tensor_rows(&in, &out);
    assert_true(isnan(u[0]) && isnan(u[1]) && isnan(mo[1]));
    expect_near(sv[0], 0.0, 0.0);
    expect_near(ef[0], 0.0, 0.0);
    expect_near(p[0], 1.0, 1e-15);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stats_sums_hand_values),
        cmocka_unit_test(test_stats_sumsq_fixed_order),
        cmocka_unit_test(test_stats_moments_hand_values),
        cmocka_unit_test(test_stats_moments_merge_equals_whole),
        cmocka_unit_test(test_stats_moments_small_spread),
        cmocka_unit_test(test_stats_spike_z_hand_values),
        cmocka_unit_test(test_partials_fold_each_kind),
        cmocka_unit_test(test_partials_same_records_same_bits),
        cmocka_unit_test(test_leaf_rows_hand_values),
        cmocka_unit_test(test_catalogue_and_features),
        cmocka_unit_test(test_tensor_rows_hand_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
