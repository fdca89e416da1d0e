// data/'s tokenizers: the UTF-8 check, the BPE shim (train, encode, decode: lossless on any
// UTF-8), token files made and checked against their tokenizer (header words, fingerprint, the
// model beside the file), and every refusal leaving nothing behind.
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <string.h>
#include <unistd.h>

#include "data/bpe.h"
#include "data/text.h"
#include "data/tokenizer.h"
#include "tests/testing.h"

static char dir[256];

static int setup(void **state)
{
    return testing_scratch_make(dir, sizeof(dir), "tokenizer");
}

static int teardown(void **state)
{
    return testing_scratch_remove(dir);
}

// A training text with a Zipf-ish mix of words, punctuation, blank lines, runs of spaces, tabs and
// multi-byte characters (2, 3 and 4 bytes). *len gets its length.
static char *corpus(size_t *len)
{
    static const char *words[] = {"the",  "of",    "and",    "grand", "jury",     "said",
                                  "café", "naïve", "日本語", "𝄞",     "\tindent", "  two"};
    size_t cap = 1 << 18, n = 0;
    char *s = malloc(cap);
    assert_non_null(s);
    unsigned x = 12345;
    for (int i = 0; i < 12000; i++) {
        x = x * 1103515245u + 12345u;
        unsigned r = (x >> 16) % 100;
        const char *w = words[r < 40 ? r % 3 : r < 80 ? 3 + r % 4 : 7 + r % 5];
        n += (size_t)snprintf(s + n, cap - n, "%s%s", w, i % 11 == 10 ? ".\n" : " ");
        if (i % 97 == 96)
            s[n++] = '\n'; // a blank line: documents
    }
    s[n] = '\0';
    *len = n;
    return s;
}

static void test_utf8_check(void **state)
{
    size_t off = 99;
    const char *good = "plain \xc3\xa9 \xe6\x97\xa5 \xf0\x9d\x84\x9e";
    assert_int_equal(text_check_utf8(good, strlen(good), &off), 0);
    const struct {
        const char *s;
        size_t len, bad;
    } cases[] = {
        {"ab\xff", 3, 2},           // never valid
        {"a\xc0\xaf", 3, 1},        // overlong '/'
        {"\xe0\x80\xaf", 3, 0},     // overlong, 3 bytes
        {"\xed\xa0\x80", 3, 0},     // a UTF-16 surrogate
        {"\xf4\x90\x80\x80", 4, 0}, // above U+10FFFF
        {"x\xc3", 2, 1},            // cut at the end
        {"\xe6\x97"
         "a",
         3, 0},         // a continuation byte missing
        {"\x80", 1, 0}, // a lone continuation byte
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(text_check_utf8(cases[i].s, cases[i].len, &off), -1);
        assert_int_equal(off, cases[i].bad);
    }
}

// Train, encode, decode: exactly the vocabulary asked for, deterministic, ids in range, and
// decode(encode(text)) == text, including text the tokenizer never saw.
static void test_bpe_round_trip(void **state)
{
    size_t len, mlen, mlen2, n = 0, back_len = 0;
    char *text = corpus(&len), *model = NULL, *model2 = NULL, *back = NULL, err[1024];
    int rc = bpe_train(text, len, 340, &model, &mlen, err, sizeof(err));
    if (rc != 0)
        print_error("bpe_train: %s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(bpe_train(text, len, 340, &model2, &mlen2, err, sizeof(err)), 0);
    assert_true(mlen == mlen2 && memcmp(model, model2, mlen) == 0); // same text, same model
    struct bpe *b = bpe_load(model, mlen, err, sizeof(err));
    assert_non_null(b);
    assert_int_equal(bpe_vocab(b), 340);
    uint16_t *ids = NULL;
    assert_int_equal(bpe_encode(b, text, len, &ids, &n, err, sizeof(err)), 0);
    assert_true(n > 0 && n < len / 2); // merges happened
    int big = 0;
    for (size_t i = 0; i < n; i++) {
        assert_true(ids[i] > 0 && ids[i] < 340); // never <unk>
        big |= ids[i] > 256;
    }
    assert_true(big);
    assert_int_equal(bpe_decode(b, ids, n, &back, &back_len, err, sizeof(err)), 0);
    assert_int_equal(back_len, len);
    assert_memory_equal(back, text, len);
    free(ids);
    free(back);
    const char *unseen = "  Zebra\t\t→ \xf0\x9f\x90\x8d!\n\n\x01end  ";
    assert_int_equal(bpe_encode(b, unseen, strlen(unseen), &ids, &n, err, sizeof(err)), 0);
    assert_int_equal(bpe_decode(b, ids, n, &back, &back_len, err, sizeof(err)), 0);
    assert_string_equal(back, unseen);
    free(back);
    uint16_t out_of_range = 340;
    assert_int_equal(bpe_decode(b, &out_of_range, 1, &back, &back_len, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "340"));
    free(ids);
    bpe_free(b);
    // too large a vocabulary for the text: SentencePiece's reason, on one line
    assert_int_equal(bpe_train("ab ab\n", 6, 5000, &model2, &mlen2, err, sizeof(err)), -1);
    assert_null(strchr(err, '\n'));
    assert_non_null(strstr(err, "5000"));
    free(model);
    free(model2);
    free(text);
}

static int exists(const char *path)
{
    return access(path, F_OK) == 0;
}

// tokenizer_make_file(text, out, 0, model) in a child process whose files may not grow past
// `limit` bytes (writes past it fail with EFBIG): its return value.
static int written_under_limit(const char *text, const char *out, const char *model, long limit)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit rl = {(rlim_t)limit, (rlim_t)limit};
        signal(SIGXFSZ, SIG_IGN);
        setrlimit(RLIMIT_FSIZE, &rl);
        struct tokenize_result res;
        char err[2048];
        _exit(tokenizer_make_file(text, out, 0, model, &res, err, sizeof(err)) == -1 ? 1 : 0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status) == 1 ? -1 : 0;
}

// tokenizer_make_file: the .bin with its header words and the .model beside it; a held-out text
// encoded with the training tokenizer; the file checked against its tokenizer.
static void test_tokenizer_files(void **state)
{
    char txt[300], bin[300], held[300], hbin[300], mpath[300], other[300], err[2048];
    size_t len;
    char *text = corpus(&len);
    struct tokenize_result res;
    struct token_file tf;
    struct tokenizer t;
    snprintf(txt, sizeof(txt), "%s/train.txt", dir);
    snprintf(bin, sizeof(bin), "%s/train.bin", dir);
    snprintf(held, sizeof(held), "%s/held.txt", dir);
    snprintf(hbin, sizeof(hbin), "%s/held.bin", dir);
    testing_write_file(txt, text, len);
    testing_write_file(held, "the grand jury said café 日本語\n",
                       strlen("the grand jury said café 日本語\n"));
    assert_int_equal(tokenizer_make_file(txt, bin, 340, NULL, &res, err, sizeof(err)), 0);
    assert_true(res.trained && res.vocab == 340 && res.id != 0 && res.bytes == len);
    tokenizer_model_path(bin, mpath, sizeof(mpath));
    assert_true(exists(mpath) && strcmp(mpath + strlen(mpath) - 12, "/train.model") == 0);
    assert_int_equal(tokens_open(&tf, bin, 340, err, sizeof(err)), 0);
    assert_true(tf.vocab == 340 && tf.tokenizer == res.id && tf.n == res.tokens);
    assert_int_equal(tokenizer_for_file(&t, &tf, bin, NULL, err, sizeof(err)), 0); // beside it
    char *back = NULL;
    size_t back_len = 0;
    assert_int_equal(tokenizer_decode(&t, tf.tokens, tf.n, &back, &back_len, err, sizeof(err)), 0);
    assert_true(back_len == len && memcmp(back, text, len) == 0);
    free(back);
    tokenizer_free(&t);
    tokens_close(&tf);
    // a model smaller than its tokenizer is refused, even though every id might fit
    assert_int_equal(tokens_open(&tf, bin, 339, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "340"));

    // the held-out text through the training tokenizer: same fingerprint, model copied beside
    uint32_t id = res.id;
    assert_int_equal(tokenizer_make_file(held, hbin, 0, mpath, &res, err, sizeof(err)), 0);
    assert_true(!res.trained && res.id == id && res.vocab == 340);
    tokenizer_model_path(hbin, other, sizeof(other));
    assert_true(exists(other));
    // --vocab must agree with a given model
    assert_int_equal(tokenizer_make_file(held, hbin, 512, mpath, &res, err, sizeof(err)), -1);
    // a write that fails after the temporary files exist (the file size limit: at 512 bytes in
    // the .bin's header, at 4 KiB in the model copied beside it) leaves neither them nor any
    // output behind
    char cut[300], cmodel[300], cmd[400];
    snprintf(cut, sizeof(cut), "%s/cut.bin", dir);
    tokenizer_model_path(cut, cmodel, sizeof(cmodel));
    const long limits[2] = {512, 4096};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(written_under_limit(held, cut, mpath, limits[i]), -1);
        assert_false(exists(cut));
        assert_false(exists(cmodel));
        snprintf(cmd, sizeof(cmd), "test -z \"$(ls -A %s | grep -F .new.)\"", dir);
        assert_int_equal(system(cmd), 0);
    }

    // another tokenizer does not decode this file
    snprintf(other, sizeof(other), "%s/other.bin", dir);
    assert_int_equal(tokenizer_make_file(txt, other, 330, NULL, &res, err, sizeof(err)), 0);
    char omodel[300];
    tokenizer_model_path(other, omodel, sizeof(omodel));
    assert_int_equal(tokens_open(&tf, bin, 65536, err, sizeof(err)), 0);
    assert_int_equal(tokenizer_for_file(&t, &tf, bin, omodel, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "does not match"));
    // ... and without the model beside it, the file says what is missing
    assert_int_equal(unlink(mpath), 0);
    assert_int_equal(tokenizer_for_file(&t, &tf, bin, NULL, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "train.model"));
    tokens_close(&tf);
    // remade byte-level at the same path: the stale .model beside it is not its tokenizer
    assert_int_equal(tokenizer_make_file(txt, other, 256, NULL, &res, err, sizeof(err)), 0);
    assert_true(exists(omodel));
    assert_int_equal(tokens_open(&tf, other, 65536, err, sizeof(err)), 0);
    assert_int_equal(tokenizer_for_file(&t, &tf, other, NULL, err, sizeof(err)), 0);
    assert_true(t.vocab == 256 && t.bpe == NULL);
    tokens_close(&tf);
    free(text);
}

// Bad input: nothing written, one line saying why.
static void test_tokenizer_refusals(void **state)
{
    char txt[300], bin[300], mpath[300], err[2048];
    struct tokenize_result res;
    snprintf(bin, sizeof(bin), "%s/bad.bin", dir);
    tokenizer_model_path(bin, mpath, sizeof(mpath));
    snprintf(txt, sizeof(txt), "%s/latin1.txt", dir);
    testing_write_file(txt, "caf\xe9 au lait\n", 13);
    assert_int_equal(tokenizer_make_file(txt, bin, 512, NULL, &res, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "not UTF-8"));
    assert_non_null(strstr(err, "offset 3"));
    // U+2581 would decode as a space: refused, so what is accepted round-trips
    char mark[300];
    snprintf(mark, sizeof(mark), "%s/mark.txt", dir);
    testing_write_file(mark, "a \xe2\x96\x81 b\n", 8);
    assert_int_equal(tokenizer_make_file(mark, bin, 512, NULL, &res, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "U+2581"));
    // the byte-level tokenizer takes any bytes
    assert_int_equal(tokenizer_make_file(txt, bin, 256, NULL, &res, err, sizeof(err)), 0);
    assert_true(res.id == 0 && res.vocab == 256 && res.tokens == 13);
    assert_int_equal(unlink(bin), 0);
    snprintf(txt, sizeof(txt), "%s/empty.txt", dir);
    testing_write_file(txt, "", 0);
    assert_int_equal(tokenizer_make_file(txt, bin, 512, NULL, &res, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "empty"));
    assert_int_equal(tokenizer_make_file(txt, bin, 256, NULL, &res, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "empty"));
    snprintf(txt, sizeof(txt), "%s/ok.txt", dir);
    testing_write_file(txt, "fine text\n", 10);
    assert_int_equal(tokenizer_make_file(txt, bin, 65537, NULL, &res, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "65536"));
    assert_int_equal(tokenizer_make_file(txt, bin, 100, NULL, &res, err, sizeof(err)), -1);
    // not a model
    assert_int_equal(tokenizer_make_file(txt, bin, 0, txt, &res, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "ok.txt"));
    assert_false(exists(bin));
    assert_false(exists(mpath));
    char cmd[340];
    snprintf(cmd, sizeof(cmd), "test -z \"$(ls %s | grep tmp)\"", dir);
    assert_int_equal(system(cmd), 0); // no temporary file left behind
}

static void test_tokenizer_names_and_fingerprint(void **state)
{
    char out[64];
    tokenizer_model_path("d/brown_4096.bin", out, sizeof(out));
    assert_string_equal(out, "d/brown_4096.model");
    tokenizer_model_path("shard.tok", out, sizeof(out));
    assert_string_equal(out, "shard.tok.model");
    // FNV-1a's published values; 0 is never a fingerprint (it means byte-level)
    assert_int_equal(tokenizer_fingerprint("", 0), 0x811c9dc5u);
    assert_int_equal(tokenizer_fingerprint("a", 1), 0xe40c292cu);
    assert_int_equal(tokenizer_fingerprint("foobar", 6), 0xbf9cf968u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8_check),
        cmocka_unit_test(test_bpe_round_trip),
        cmocka_unit_test(test_tokenizer_files),
        cmocka_unit_test(test_tokenizer_refusals),
        cmocka_unit_test(test_tokenizer_names_and_fingerprint),
    };
    return cmocka_run_group_tests_name("tokenizer", tests, setup, teardown);
}
