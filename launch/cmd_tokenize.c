// `canary tokenize` (text -> token file, byte-level or BPE) and `canary decode` (token ids ->
// text). Rank 0 does the work; other ranks of an mpirun return at once.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/bpe.h"
#include "data/tokenizer.h"
#include "launch/cli.h"
#include "util/error.h"

static void tokenize_usage(FILE *f)
{
    fprintf(
        f,
        "usage: canary tokenize [--vocab N | --tokenizer MODEL] IN.txt OUT.bin\n"
        "\n"
        "Turns a text file into a token file in llm.c's .bin layout (256 x int32 header,\n"
        "magic 20240520, version 1, then uint16 tokens).\n"
        "  (default), --vocab 256  byte-level: one token per byte\n"
        "  --vocab N               train a BPE tokenizer of N ids (%d..65536) on IN.txt with\n"
        "                          SentencePiece: lossless (byte fallback, no normalisation,\n"
        "                          no <s>/</s>), so 'canary decode' gives IN.txt back (text\n"
        "                          holding U+2581, SentencePiece's space, is refused). It is\n"
        "                          written beside OUT.bin as OUT.model\n"
        "  --tokenizer MODEL       encode with an existing tokenizer (the training file's, for\n"
        "                          held-out text); it is copied beside OUT.bin\n"
        "\n"
        "The header records the tokenizer's vocabulary size (word 3) and fingerprint (word 4);\n"
        "set model.vocab to at least that size. BPE needs UTF-8 text. Files are written\n"
        "through temporary names: a failure leaves nothing half-written.\n",
        BPE_MIN_VOCAB);
}

static void decode_usage(FILE *f)
{
    fprintf(f,
            "usage: canary decode [--tokenizer MODEL] [--from I] [--count N] FILE.bin\n"
            "       canary decode [--tokenizer MODEL] --ids 'ID ID ...'\n"
            "\n"
            "Writes the text of tokens I .. I+N-1 of FILE.bin (all of them by default), or of\n"
            "the ids given, to stdout. The tokenizer is MODEL, else the .model beside FILE.bin,\n"
            "else byte-level; a model that does not belong to the file is refused.\n");
}

// A non-negative integer option value in [0, max]; prints the error and returns -1 otherwise.
static int parse_count(const char *cmd, const char *opt, const char *s, long max, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || errno != 0 || v < 0 || v > max) {
        err_printf("%s: %s takes an integer in [0, %ld], not '%s'", cmd, opt, max, s);
        return -1;
    }
    *out = v;
    return 0;
}

int cmd_tokenize(int argc, char **argv, struct dist_ctx *d)
{
    char err[2048];
    const char *model = NULL, *pos[2];
    long vocab = 0;
    int npos = 0;
    struct tokenize_result res;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            if (d->rank == 0)
                tokenize_usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--vocab") == 0 && i + 1 < argc) {
            if (parse_count("tokenize", "--vocab", argv[++i], 1L << 30, &vocab) != 0)
                return 1;
        } else if (strcmp(argv[i], "--tokenizer") == 0 && i + 1 < argc) {
            model = argv[++i];
        } else if (argv[i][0] != '-' && npos < 2) {
            pos[npos++] = argv[i];
        } else {
            return cli_unexpected("tokenize", argv[i], tokenize_usage, d);
        }
    }
    if (npos != 2) {
        err_printf("tokenize: expected IN.txt OUT.bin (see 'canary tokenize --help')");
        return 1;
    }
    if (d->rank != 0)
        return 0;
    if (!model && vocab > 256 && vocab >= BPE_MIN_VOCAB && vocab <= TOKENS_MAX_VOCAB)
        printf("training a %ld-id BPE tokenizer on %s (SentencePiece) ...\n", vocab, pos[0]);
    fflush(stdout);
    if (tokenizer_make_file(pos[0], pos[1], (int)vocab, model, &res, err, sizeof(err)) != 0) {
        err_printf("tokenize: %s", err);
        return 1;
    }
    if (res.id == 0) {
        printf("wrote %zu tokens to %s (byte-level, vocab 256)\n", res.tokens, pos[1]);
    } else {
        char mpath[4096];
        tokenizer_model_path(pos[1], mpath, sizeof(mpath));
        printf("wrote %zu tokens to %s (BPE, vocab %d, %.2f bytes per token; tokenizer %s, "
               "fingerprint %08x%s)\n",
               res.tokens, pos[1], res.vocab, (double)res.bytes / (double)res.tokens, mpath, res.id,
               res.trained ? "" : ", reused");
        if (res.trained)
            printf("trained in %.1f s\n", res.train_seconds);
    }
    return 0;
}

// Parses "ID ID ..." (spaces or commas) into *ids. Returns the count, or -1 after an error.
static long parse_ids(const char *s, uint16_t **ids)
{
    size_t cap = strlen(s) / 2 + 1;
    long n = 0;
    *ids = malloc(cap * sizeof(**ids));
    if (!*ids)
        return -1;
    for (const char *p = s; *p;) {
        if (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n') {
            p++;
            continue;
        }
        char *end = NULL;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno != 0 || v < 0 || v >= TOKENS_MAX_VOCAB) {
            err_printf("decode: --ids: '%.20s' is not a token id (0..%d)", p, TOKENS_MAX_VOCAB - 1);
            free(*ids);
            return -1;
        }
        (*ids)[n++] = (uint16_t)v;
        p = end;
    }
    return n;
}

// The text of ids through t, to stdout. Returns the exit code.
static int decode_out(const struct tokenizer *t, const uint16_t *ids, size_t n)
{
    char err[1024], *text = NULL;
    size_t len = 0;
    if (tokenizer_decode(t, ids, n, &text, &len, err, sizeof(err)) != 0) {
        err_printf("decode: %s", err);
        return 1;
    }
    int rc = fwrite(text, 1, len, stdout) == len && fflush(stdout) == 0 ? 0 : 2;
    free(text);
    return rc;
}

int cmd_decode(int argc, char **argv, struct dist_ctx *d)
{
    char err[2048];
    const char *model = NULL, *file = NULL, *ids_arg = NULL;
    long from = 0, count = -1;
    for (int i = 1; i < argc; i++) {
        int more = i + 1 < argc;
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            if (d->rank == 0)
                decode_usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--tokenizer") == 0 && more) {
            model = argv[++i];
        } else if (strcmp(argv[i], "--ids") == 0 && more) {
            ids_arg = argv[++i];
        } else if (strcmp(argv[i], "--from") == 0 && more) {
            if (parse_count("decode", "--from", argv[++i], 1L << 40, &from) != 0)
                return 1;
        } else if (strcmp(argv[i], "--count") == 0 && more) {
            if (parse_count("decode", "--count", argv[++i], 1L << 40, &count) != 0)
                return 1;
        } else if (argv[i][0] != '-' && !file) {
            file = argv[i];
        } else {
            return cli_unexpected("decode", argv[i], decode_usage, d);
        }
    }
    if (!file == !ids_arg) {
        err_printf("decode: give FILE.bin or --ids (see 'canary decode --help')");
        return 1;
    }
    if (d->rank != 0)
        return 0;
    struct tokenizer t = {0};
    int rc = 1;
    if (ids_arg) {
        uint16_t *ids = NULL;
        long n = parse_ids(ids_arg, &ids);
        if (n < 0)
            return 1;
        if (model && tokenizer_load(&t, model, err, sizeof(err)) != 0)
            err_printf("decode: %s", err);
        else
            rc = decode_out(model ? &t : &(struct tokenizer){.vocab = 256}, ids, (size_t)n);
        free(ids);
        tokenizer_free(&t);
        return rc;
    }
    struct token_file tf;
    if (tokens_open(&tf, file, TOKENS_MAX_VOCAB, err, sizeof(err)) != 0) {
        err_printf("decode: %s", err);
        return 1;
    }
    if (tokenizer_for_file(&t, &tf, file, model, err, sizeof(err)) != 0) {
        err_printf("decode: %s", err);
    } else if ((size_t)from > tf.n) {
        err_printf("decode: --from %ld is past the end of '%s' (%zu tokens)", from, file, tf.n);
    } else {
        size_t n =
            count < 0 || (size_t)count > tf.n - (size_t)from ? tf.n - (size_t)from : (size_t)count;
        rc = decode_out(&t, tf.tokens + from, n);
    }
    tokenizer_free(&t);
    tokens_close(&tf);
    return rc;
}
