// data/: token files (round trip and every way a file can be bad), tokenizer, sampler.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/sampler.h"
#include "data/tokens.h"
#include "tests/testing.h"

static char dir[256];

static int setup(void **state)
{
    return testing_scratch_make(dir, sizeof(dir), "data");
}

static int teardown(void **state)
{
    return testing_scratch_remove(dir);
}

static void test_tokens_round_trip(void **state)
{
    char path[300], err[512];
    uint16_t tok[100];
    struct token_file tf;
    for (int i = 0; i < 100; i++)
        tok[i] = (uint16_t)(i * 37 % 300);
    snprintf(path, sizeof(path), "%s/ok.bin", dir);
    assert_int_equal(tokens_write(path, tok, 100, 0, 0, err, sizeof(err)), 0);
    assert_int_equal(tokens_open(&tf, path, 300, err, sizeof(err)), 0);
    assert_int_equal(tf.n, 100);
    assert_memory_equal(tf.tokens, tok, sizeof(tok));
    tokens_close(&tf);
    // llm.c layout: 1024-byte header of int32 magic, version, count
    FILE *f = fopen(path, "rb");
    int32_t hdr[3];
    assert_int_equal(fread(hdr, 4, 3, f), 3);
    fclose(f);
    assert_int_equal(hdr[0], 20240520);
    assert_int_equal(hdr[1], 1);
    assert_int_equal(hdr[2], 100);
    // a token ≥ vocab is refused and named
    assert_int_equal(tokens_open(&tf, path, 200, err, sizeof(err)), -1);
    assert_non_null(strstr(err, ">= vocab 200"));
    assert_non_null(strstr(err, path));
}

static void test_tokens_bad_files_refused(void **state)
{
    char path[300], err[512];
    struct token_file tf;
    int32_t hdr[256] = {20240520, 1, 10};
    static unsigned char buf[1024 + 20];
    // missing
    snprintf(path, sizeof(path), "%s/none.bin", dir);
    assert_int_equal(tokens_open(&tf, path, 256, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "No such file"));
    // shorter than the header
    snprintf(path, sizeof(path), "%s/short.bin", dir);
    testing_write_file(path, hdr, 100);
    assert_int_equal(tokens_open(&tf, path, 256, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "shorter than"));
    // truncated: header says 10 tokens, file holds 9
    memcpy(buf, hdr, 1024);
    snprintf(path, sizeof(path), "%s/trunc.bin", dir);
    testing_write_file(path, buf, 1024 + 18);
    assert_int_equal(tokens_open(&tf, path, 256, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "truncated"));
    // wrong magic
    hdr[0] = 12345;
    memcpy(buf, hdr, 1024);
    snprintf(path, sizeof(path), "%s/magic.bin", dir);
    testing_write_file(path, buf, 1024 + 20);
    assert_int_equal(tokens_open(&tf, path, 256, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "bad magic"));
    // wrong version
    hdr[0] = 20240520;
    hdr[1] = 2;
    memcpy(buf, hdr, 1024);
    testing_write_file(path, buf, 1024 + 20);
    assert_int_equal(tokens_open(&tf, path, 256, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "version 2"));
}

static void test_tokenize_bytes(void **state)
{
    char txt[300], bin[300], err[512];
    size_t n = 0;
    struct token_file tf;
    snprintf(txt, sizeof(txt), "%s/t.txt", dir);
    snprintf(bin, sizeof(bin), "%s/t.bin", dir);
    testing_write_file(txt, "Ab\n\xff", 4);
    assert_int_equal(tokens_from_text(txt, bin, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 4);
    assert_int_equal(tokens_open(&tf, bin, 256, err, sizeof(err)), 0);
    assert_int_equal(tf.tokens[0], 'A');
    assert_int_equal(tf.tokens[2], '\n');
    assert_int_equal(tf.tokens[3], 255);
    tokens_close(&tf);
    // an output that cannot be renamed into place (a directory of that name) fails after its
    // temporary file was written, and leaves none behind
    snprintf(bin, sizeof(bin), "%s/sub", dir);
    assert_int_equal(mkdir(bin, 0755), 0);
    assert_int_equal(tokens_from_text(txt, bin, &n, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "rename"));
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "test -z \"$(ls -A %s | grep -F .tmp.)\"", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_sampler_keyed_by_seed_and_index(void **state)
{
    enum { N = 1000, T = 8 };
    uint16_t data[N];
    int in1[4 * T], tg1[4 * T], in2[2 * T], tg2[2 * T];
    for (int i = 0; i < N; i++)
        data[i] = (uint16_t)i;
    struct sampler s = {data, 900, data + 900, 100, T, 42};
    sampler_train_batch(&s, in1, tg1, 10, 4);
    // samples 12, 13 alone equal the last two of the batch of 10..13 (rank slices agree)
    sampler_train_batch(&s, in2, tg2, 12, 2);
    assert_memory_equal(in2, in1 + 2 * T, 2 * T * sizeof(int));
    for (int b = 0; b < 4; b++) {
        for (int t = 0; t < T; t++) {
            assert_int_equal(tg1[b * T + t], in1[b * T + t] + 1); // targets are the next tokens
            assert_true(in1[b * T + t] < 900 - 1 + 1);            // inside the training split
        }
    }
    struct sampler s2 = s;
    s2.seed = 43;
    sampler_train_batch(&s2, in2, tg2, 10, 2);
    assert_true(memcmp(in2, in1, 2 * T * sizeof(int)) != 0);
    // evaluation sequences are consecutive windows of the held-out split, in order
    assert_int_equal(sampler_eval_sequences(&s), (100 - 1) / T);
    sampler_eval_batch(&s, in2, tg2, 1, 2);
    assert_int_equal(in2[0], 900 + T);
    assert_int_equal(in2[T], 900 + 2 * T);
}

static void test_sampler_stays_inside_the_training_split(void **state)
{
    // n_train = T + 1 leaves exactly one valid start; the held-out split is all sentinels, so an
    // off-by-one would show up as a sentinel in the inputs or targets.
    enum { T = 8 };
    uint16_t data[T + 1 + 20];
    int in[16 * T], tg[16 * T];
    for (int i = 0; i < T + 1; i++)
        data[i] = (uint16_t)i;
    for (int i = T + 1; i < T + 21; i++)
        data[i] = 999;
    struct sampler s = {data, T + 1, data + T + 1, 20, T, 1};
    sampler_train_batch(&s, in, tg, 0, 16);
    for (int b = 0; b < 16; b++) {
        for (int t = 0; t < T; t++) {
            assert_int_equal(in[b * T + t], t);
            assert_int_equal(tg[b * T + t], t + 1);
        }
    }
    sampler_eval_batch(&s, in, tg, 0, 4);
    for (int i = 0; i < 4 * T; i++)
        assert_int_equal(tg[i], 999); // evaluation reads the held-out split only
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokens_round_trip),
        cmocka_unit_test(test_tokens_bad_files_refused),
        cmocka_unit_test(test_tokenize_bytes),
        cmocka_unit_test(test_sampler_keyed_by_seed_and_index),
        cmocka_unit_test(test_sampler_stays_inside_the_training_split),
    };
    return cmocka_run_group_tests_name("data", tests, setup, teardown);
}
