// dist/: run under mpiexec -n 1, 2 and 4 by ctest. The deterministic tree reduction (bitwise equal
// to the serial balanced tree, on every rank), the bucketed reducer, the mismatch finder, splits,
// the gather of Muon's sharded updates, the agreement on the matmul backend.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "dist/reduce.h"
#include "launch/config.h"
#include "launch/run_backend.h"
#include "tests/testing.h"

static struct dist_ctx world;

// Rank r's leaf i: of like magnitude and varied mantissas, on which sums in different orders
// round differently. Not inlined: with FMA contraction each inlined copy could round its
// multiply-add differently, and the rank and the serial reference must see the same leaves.
static __attribute__((noinline)) float mixed(int r, size_t i)
{
    double u = sin((double)i * 12.9898 + (double)r * 78.233) * 43758.5453;
    return (float)((u - floor(u)) * (r % 2 ? -3.0 : 7.0) + 0.5 * (double)r);
}

// The balanced binary tree over n leaves (n a power of two), serially.
static float tree_sum(const float *leaves, int n)
{
    if (n == 1)
        return leaves[0];
    return tree_sum(leaves, n / 2) + tree_sum(leaves + n / 2, n / 2);
}

static void test_dist_tree_allreduce_is_the_balanced_tree(void **state)
{
    enum { N = 1000 };
    float *buf = calloc(N, sizeof(float)), *scratch = calloc(N, sizeof(float));
    float leaves[64];
    for (size_t i = 0; i < N; i++)
        buf[i] = mixed(world.rank, i);
    dist_tree_allreduce_f32(&world, buf, scratch, N);
    int chain_differs = 0; // the data tell the tree from a chain (((r0 + r1) + r2) + r3)
    for (size_t i = 0; i < N; i++) {
        float chain = 0.0f;
        for (int r = 0; r < world.size; r++) {
            leaves[r] = mixed(r, i);
            chain += leaves[r];
        }
        float want = tree_sum(leaves, world.size);
        chain_differs |= chain != want;
        if (memcmp(&buf[i], &want, sizeof(float)) != 0)
            fail_msg("element %zu: %.9g, serial tree %.9g", i, buf[i], want);
    }
    assert_true(world.size < 4 || chain_differs);
    // every rank holds the same bits
    unsigned long long bits[N / 2], scr[N];
    memcpy(bits, buf, sizeof(bits));
    assert_int_equal(dist_first_mismatch_u64(&world, bits, scr, N / 2), -1);
    free(buf);
    free(scratch);
}

static void check_reducer(int overlap)
{
    // five "tensors" of uneven sizes; buckets of at least 300 floats close at their boundaries
    size_t bounds[6] = {0, 100, 400, 450, 900, 1000};
    struct dist_reducer red;
    float buf[1000];
    dist_reducer_init(&red, &world, bounds, 5, 300, overlap);
    assert_int_equal(red.n, 3); // [450,1000), [100,450), [0,100)
    assert_int_equal(red.buckets[0].lo, 450);
    assert_int_equal(red.buckets[1].lo, 100);
    assert_int_equal(red.buckets[2].hi, 100);
    for (int i = 0; i < 1000; i++)
        buf[i] = (float)(world.rank + 1) * (float)(i % 7);
    // overlapped (with more than one rank): a bucket starts as soon as backward has completed
    // it, not before; blocking: nothing starts before finish
    int overlapping = overlap && world.size > 1;
    dist_reducer_begin(&red, buf);
    dist_reducer_ready(&red, 900); // nothing complete yet
    for (int b = 0; b < red.n; b++)
        assert_false(red.buckets[b].started);
    dist_reducer_ready(&red, 450); // bucket 0 is complete
    assert_int_equal(red.buckets[0].started, overlapping);
    assert_false(red.buckets[1].started || red.buckets[2].started);
    dist_reducer_ready(&red, 0);
    for (int b = 0; b < red.n; b++)
        assert_int_equal(red.buckets[b].started, overlapping);
    dist_reducer_finish(&red);
    float ranks_sum = (float)(world.size * (world.size + 1) / 2);
    for (int i = 0; i < 1000; i++)
        expect_near(buf[i], ranks_sum * (float)(i % 7), 0.0);
    dist_reducer_free(&red);
}

static void test_dist_reducer_sums_overlapped(void **state)
{
    check_reducer(1);
}

static void test_dist_reducer_sums_blocking(void **state)
{
    check_reducer(0);
}

static void test_dist_first_mismatch_finds_index(void **state)
{
    unsigned long long v[8] = {1, 2, 3, 4, 5, 6, 7, 8}, scr[16];
    assert_int_equal(dist_first_mismatch_u64(&world, v, scr, 8), -1);
    if (world.rank == world.size - 1)
        v[5] = 99;
    assert_int_equal(dist_first_mismatch_u64(&world, v, scr, 8), world.size > 1 ? 5 : -1);
}

static void test_dist_split_groups(void **state)
{
    struct dist_ctx g;
    assert_int_equal(dist_split(&world, world.rank / 2, &g), 0);
    int want = world.size - (world.rank / 2) * 2 >= 2 ? 2 : 1;
    assert_int_equal(g.size, want);
    assert_int_equal(g.rank, world.rank % 2);
    double mx = dist_max_f64(&g, (double)world.rank);
    expect_near(mx, (double)(world.rank / 2 * 2 + want - 1), 0.0);
    dist_free(&g);
}

// Rank q sends 7·q + 5 floats (rank 1 sends none), value 1000·q + i; every rank ends with all
// blocks in rank order — through MPI_Allgatherv and through the chunked broadcasts that take over
// past max_count floats (3 here, so blocks split unevenly; the default is 2^30).
static void check_gather(int chunked)
{
    size_t counts[64], total = 0;
    for (int q = 0; q < world.size; q++) {
        counts[q] = q == 1 ? 0 : (size_t)(7 * q + 5);
        total += counts[q];
    }
    struct dist_gather g;
    dist_gather_init(&g, &world, counts, chunked ? 3 : 0);
    assert_int_equal(g.total, total);
    assert_int_equal(g.fits, !chunked); // with max_count 3: 5 or more floats
    float send[64], recv[1024];
    for (size_t i = 0; i < counts[world.rank]; i++)
        send[i] = (float)(1000 * world.rank) + (float)i;
    memset(recv, 0xff, sizeof(recv));
    dist_gather_f32(&world, &g, send, recv);
    size_t at = 0;
    for (int q = 0; q < world.size; q++) {
        assert_int_equal(g.displs[q], at);
        for (size_t i = 0; i < counts[q]; i++)
            expect_near(recv[at + i], (float)(1000 * q) + (float)i, 0.0);
        at += counts[q];
    }
    dist_gather_free(&g);
}

static void test_dist_gather_allgatherv(void **state)
{
    check_gather(0);
}

static void test_dist_gather_chunked(void **state)
{
    check_gather(1);
}

// The matmul backend is agreed across ranks: here even ranks "have" oneDNN's bf16 matmul and odd
// ranks do not, as ranks on different CPUs would. Every rank returns the same verdict.
static void test_dist_backend_choice_agrees(void **state)
{
    struct config c;
    config_defaults(&c);
    struct run_backend b;
    char err[512] = "";
    int avail = world.rank % 2 == 0, mixed = world.size > 1;
    c.train.precision = 1;
    // auto: each rank takes what it has; mixed ranks are allowed without determinism, named
    assert_int_equal(run_choose_backend(&world, &c, avail, "no bf16 here", &b, err, sizeof(err)),
                     0);
    assert_int_equal(b.onednn, avail);
    assert_int_equal(b.mixed, mixed);
    assert_string_equal(b.why, avail ? "" : "no bf16 here");
    // deterministic bf16 on a mix: refused on every rank
    c.train.deterministic = 1;
    int rc = run_choose_backend(&world, &c, avail, "no bf16 here", &b, err, sizeof(err));
    assert_int_equal(rc, mixed ? -1 : 0);
    if (mixed)
        assert_non_null(strstr(err, "different backends"));
    // openblas everywhere: deterministic holds, nobody uses oneDNN
    c.train.matmul_backend = MATMUL_OPENBLAS;
    assert_int_equal(run_choose_backend(&world, &c, avail, "x", &b, err, sizeof(err)), 0);
    assert_true(b.onednn == 0 && b.mixed == 0);
    // onednn asked for: refused on every rank when one rank lacks it, naming the reason
    c.train.matmul_backend = MATMUL_ONEDNN, c.train.deterministic = 0;
    rc = run_choose_backend(&world, &c, avail, "no bf16 here", &b, err, sizeof(err));
    assert_int_equal(rc, mixed ? -1 : 0);
    if (mixed)
        assert_non_null(strstr(err, avail ? "another rank's CPU" : "no bf16 here"));
    // fp32 stays on OpenBLAS under auto, whatever oneDNN could do
    c.train.matmul_backend = MATMUL_AUTO, c.train.precision = 0;
    assert_int_equal(run_choose_backend(&world, &c, 1, "", &b, err, sizeof(err)), 0);
    assert_int_equal(b.onednn, 0);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dist_tree_allreduce_is_the_balanced_tree),
        cmocka_unit_test(test_dist_reducer_sums_overlapped),
        cmocka_unit_test(test_dist_reducer_sums_blocking),
        cmocka_unit_test(test_dist_first_mismatch_finds_index),
        cmocka_unit_test(test_dist_split_groups),
        cmocka_unit_test(test_dist_gather_allgatherv),
        cmocka_unit_test(test_dist_gather_chunked),
        cmocka_unit_test(test_dist_backend_choice_agrees),
    };
    if (dist_init(&world, &argc, &argv) != 0)
        return 1;
    int failed = cmocka_run_group_tests_name("dist", tests, NULL, NULL);
    // a failure on any rank fails the job
    int all_ok = dist_all_ok(&world, failed == 0);
    dist_free(&world);
    return all_ok ? 0 : 1;
}
