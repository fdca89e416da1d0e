// Tokenizers of token files: which one a file was made with, and making files with one. The BPE
// work itself is SentencePiece's (data/bpe.cc); this file does the files, the checks and the
// bookkeeping in the .bin header.
#include "data/tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/bpe.h"
#include "data/text.h"
#include "util/timer.h"

uint32_t tokenizer_fingerprint(const void *bytes, size_t n)
{
    const unsigned char *p = bytes;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h ? h : 1u;
}

void tokenizer_model_path(const char *bin_path, char *out, size_t outlen)
{
    size_t n = strlen(bin_path);
    if (n > 4 && strcmp(bin_path + n - 4, ".bin") == 0)
        snprintf(out, outlen, "%.*s.model", (int)(n - 4), bin_path);
    else
        snprintf(out, outlen, "%s.model", bin_path);
}

// Loads model bytes already in memory; path only names them in messages.
static int load_bytes(struct tokenizer *t, const char *bytes, size_t n, const char *path, char *err,
                      size_t errlen)
{
    char why[512];
    memset(t, 0, sizeof(*t));
    t->bpe = bpe_load(bytes, n, why, sizeof(why));
    if (!t->bpe) {
        snprintf(err, errlen, "tokenizer '%s': %s", path, why);
        return -1;
    }
    t->vocab = bpe_vocab(t->bpe);
    t->id = tokenizer_fingerprint(bytes, n);
    if (t->vocab > TOKENS_MAX_VOCAB) {
        snprintf(err, errlen, "tokenizer '%s' has %d ids; token files hold uint16 ids (at most %d)",
                 path, t->vocab, TOKENS_MAX_VOCAB);
        tokenizer_free(t);
        return -1;
    }
    return 0;
}

int tokenizer_load(struct tokenizer *t, const char *model_path, char *err, size_t errlen)
{
    char *bytes = NULL;
    size_t n = 0;
    memset(t, 0, sizeof(*t));
    if (text_read(model_path, "tokenizer file", &bytes, &n, err, errlen) != 0)
        return -1;
    int rc = load_bytes(t, bytes, n, model_path, err, errlen);
    free(bytes);
    return rc;
}

int tokenizer_for_file(struct tokenizer *t, const struct token_file *tf, const char *bin_path,
                       const char *model_path, char *err, size_t errlen)
{
    char beside[4096];
    memset(t, 0, sizeof(*t));
    int bytes = tf->tokenizer == 0 && tf->vocab == 256; // written by the byte-level tokenizer
    if (!model_path && bytes) {
        t->vocab = 256; // a stale .model beside it (the file was remade) does not matter
        return 0;
    }
    if (!model_path) {
        tokenizer_model_path(bin_path, beside, sizeof(beside));
        if (access(beside, F_OK) == 0) {
            model_path = beside;
        } else if (tf->tokenizer != 0) {
            snprintf(err, errlen,
                     "token file '%s' was made by a BPE tokenizer, but '%s' is missing (give "
                     "--tokenizer MODEL)",
                     bin_path, beside);
            return -1;
        } else {
            for (size_t i = 0; i < tf->n; i++)
                if (tf->tokens[i] > 255) {
                    snprintf(err, errlen,
                             "token file '%s' has id %u (not a byte) and no tokenizer beside it "
                             "('%s'): give --tokenizer MODEL",
                             bin_path, tf->tokens[i], beside);
                    return -1;
                }
            t->vocab = 256; // byte-level
            return 0;
        }
    }
    if (tokenizer_load(t, model_path, err, errlen) != 0)
        return -1;
    if ((tf->tokenizer != 0 && tf->tokenizer != t->id) ||
        (tf->vocab != 0 && tf->vocab != t->vocab) || bytes) {
        snprintf(err, errlen,
                 "tokenizer '%s' (%d ids, fingerprint %08x) does not match token file '%s' "
                 "(made by %sa tokenizer of %d ids, fingerprint %08x)",
                 model_path, t->vocab, t->id, bin_path, bytes ? "the byte-level tokenizer: " : "",
                 tf->vocab, tf->tokenizer);
        tokenizer_free(t);
        return -1;
    }
    return 0;
}

void tokenizer_free(struct tokenizer *t)
{
    if (t->bpe)
        bpe_free(t->bpe);
    memset(t, 0, sizeof(*t));
}

int tokenizer_decode(const struct tokenizer *t, const uint16_t *ids, size_t n, char **text,
                     size_t *len, char *err, size_t errlen)
{
    if (t->bpe)
        return bpe_decode(t->bpe, ids, n, text, len, err, errlen);
    char *s = malloc(n + 1);
    if (!s) {
        snprintf(err, errlen, "decode: out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (ids[i] > 255) {
            snprintf(err, errlen, "token %u at position %zu is not a byte (byte-level tokenizer)",
                     ids[i], i);
            free(s);
            return -1;
        }
        s[i] = (char)ids[i];
    }
    s[n] = '\0';
    *text = s;
    *len = n;
    return 0;
}

// The BPE half of tokenizer_make_file: model bytes from model_path or from training on text.
static int bpe_model_bytes(const char *text, size_t len, int vocab, const char *model_path,
                           char **model, size_t *model_len, struct tokenize_result *res, char *err,
                           size_t errlen)
{
    if (model_path)
        return text_read(model_path, "tokenizer file", model, model_len, err, errlen);
    double t0 = timer_now();
    char why[1024];
    if (bpe_train(text, len, vocab, model, model_len, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "train a %d-id BPE tokenizer: %s", vocab, why);
        return -1;
    }
    res->trained = 1;
    res->train_seconds = timer_now() - t0;
    return 0;
}

// What a BPE tokenizer cannot take: text that is not UTF-8, and U+2581 (▁), the character
// SentencePiece writes spaces as: it would come back as a space, so the text would not
// round-trip. Returns 0 or -1 with the place in err.
static int check_bpe_text(const char *path, const char *text, size_t len, char *err, size_t errlen)
{
    size_t bad = 0, line = 1;
    const char *why = NULL;
    if (text_check_utf8(text, len, &bad) != 0) {
        why = "is not UTF-8";
    } else {
        for (bad = 0; bad + 3 <= len; bad++)
            if (memcmp(text + bad, "\xe2\x96\x81", 3) == 0)
                break;
        if (bad + 3 > len)
            return 0;
        why = "holds U+2581 (the character SentencePiece writes spaces as; it would decode as a "
              "space)";
    }
    for (size_t i = 0; i < bad; i++)
        line += text[i] == '\n';
    snprintf(err, errlen,
             "text file '%s' %s: byte 0x%02x at offset %zu (line %zu); a BPE tokenizer needs "
             "UTF-8 text without it (byte-level, --vocab 256, takes any bytes)",
             path, why, (unsigned char)text[bad], bad, line);
    return -1;
}

// Puts the new files in place: model bytes and ids are written under temporary names, then the
// .model is renamed over out_model and the .bin over out_bin. A failure before the renames leaves
// nothing; between them (same directory: not expected) the old .bin's fingerprint no longer
// matches the new .model, which canary reports.
static int write_pair(const char *out_bin, const char *out_model, const char *model,
                      size_t model_len, const uint16_t *ids, size_t n, const struct tokenizer *t,
                      char *err, size_t errlen)
{
    char bin_tmp[4200], model_tmp[4200];
    int rc = -1, have_model = model != NULL;
    snprintf(bin_tmp, sizeof(bin_tmp), "%s.new.%ld", out_bin, (long)getpid());
    snprintf(model_tmp, sizeof(model_tmp), "%s.new.%ld", out_model, (long)getpid());
    if (tokens_write(bin_tmp, ids, n, t->vocab, t->id, err, errlen) != 0)
        goto out;
    if (have_model && text_write_atomic(model_tmp, model, model_len, NULL, 0, err, errlen) != 0)
        goto out;
    if (have_model && rename(model_tmp, out_model) != 0) {
        snprintf(err, errlen, "rename '%s' to '%s': %s", model_tmp, out_model, strerror(errno));
        goto out;
    }
    if (rename(bin_tmp, out_bin) != 0) {
        snprintf(err, errlen, "rename '%s' to '%s': %s", bin_tmp, out_bin, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (rc != 0) {
        unlink(bin_tmp);
        unlink(model_tmp);
    }
    return rc;
}

int tokenizer_make_file(const char *text_path, const char *out_bin, int vocab,
                        const char *model_path, struct tokenize_result *res, char *err,
                        size_t errlen)
{
    char *text = NULL, *model = NULL, out_model[4096], why[1024];
    size_t len = 0, model_len = 0, n = 0;
    uint16_t *ids = NULL;
    struct tokenizer t = {0};
    struct stat st;
    int rc = -1;
    memset(res, 0, sizeof(*res));
    if (!model_path && (vocab == 0 || vocab == 256)) {
        if (tokens_from_text(text_path, out_bin, &res->tokens, err, errlen) != 0)
            return -1;
        res->bytes = res->tokens;
        res->vocab = 256;
        return 0;
    }
    // what can be refused before reading (and training on) a large text
    if (!model_path && (vocab < BPE_MIN_VOCAB || vocab > TOKENS_MAX_VOCAB)) {
        snprintf(err, errlen,
                 "--vocab %d: a BPE vocabulary has %d to %d ids (token files hold uint16 ids); "
                 "256 is byte-level",
                 vocab, BPE_MIN_VOCAB, TOKENS_MAX_VOCAB);
        return -1;
    }
    tokenizer_model_path(out_bin, out_model, sizeof(out_model));
    if ((stat(out_bin, &st) == 0 && !S_ISREG(st.st_mode)) ||
        (stat(out_model, &st) == 0 && !S_ISREG(st.st_mode))) {
        snprintf(err, errlen, "'%s' or '%s' exists and is not a regular file", out_bin, out_model);
        return -1;
    }
    if (text_read(text_path, "text file", &text, &len, err, errlen) != 0 ||
        check_bpe_text(text_path, text, len, err, errlen) != 0)
        goto out;
    if (bpe_model_bytes(text, len, vocab, model_path, &model, &model_len, res, err, errlen) != 0)
        goto out;
    if (load_bytes(&t, model, model_len, model_path ? model_path : "(trained)", err, errlen) != 0)
        goto out;
    if (model_path && vocab != 0 && vocab != t.vocab) {
        snprintf(err, errlen, "--vocab %d, but tokenizer '%s' has %d ids", vocab, model_path,
                 t.vocab);
        goto out;
    }
    if (bpe_encode(t.bpe, text, len, &ids, &n, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "encode '%s': %s", text_path, why);
        goto out;
    }
    if (n > INT32_MAX) {
        snprintf(err, errlen, "'%s' encodes to %zu tokens, more than a token file holds (2^31 - 1)",
                 text_path, n);
        goto out;
    }
    // a given model already in place is not rewritten
    int same = model_path && strcmp(model_path, out_model) == 0;
    if (write_pair(out_bin, out_model, same ? NULL : model, model_len, ids, n, &t, err, errlen) !=
        0)
        goto out;
    res->bytes = len;
    res->tokens = n;
    res->vocab = t.vocab;
    res->id = t.id;
    rc = 0;
out:
    tokenizer_free(&t);
    free(text);
    free(model);
    free(ids);
    return rc;
}
