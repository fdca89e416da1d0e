// llm.c-compatible token files. Reading maps the file read-only: a corpus of any size costs no
// heap, and several ranks on one node share the page cache.
#include "data/tokens.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/text.h"

int tokens_open(struct token_file *tf, const char *path, int vocab, char *err, size_t errlen)
{
    int fd = -1, rc = -1;
    struct stat st;
    void *map = MAP_FAILED;
    const int32_t *hdr = NULL;
    size_t hdr_bytes = TOKENS_HEADER_INTS * sizeof(int32_t);

    memset(tf, 0, sizeof(*tf));
    // stat first: opening a FIFO or device for reading could block
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "token file '%s': not a regular file", path);
        goto out;
    }
    fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0) {
        int e = errno, v = 0;
        const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        char tail[8] = "";
        // the prepared corpora say how to make them
        if (e == ENOENT && sscanf(base, "brown_%d.bi%1s", &v, tail) == 2 && v > 0)
            snprintf(err, errlen,
                     "open token file '%s': %s (data/prepare_brown --vocab %d makes it)", path,
                     strerror(e), v);
        else
            snprintf(err, errlen, "open token file '%s': %s", path, strerror(e));
        goto out;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "token file '%s': not a regular file", path);
        goto out;
    }
    if ((size_t)st.st_size < hdr_bytes) {
        snprintf(err, errlen, "token file '%s': %lld bytes, shorter than the %zu-byte header", path,
                 (long long)st.st_size, hdr_bytes);
        goto out;
    }
    map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        snprintf(err, errlen, "map token file '%s': %s", path, strerror(errno));
        goto out;
    }
    hdr = map;
    if (hdr[0] != TOKENS_MAGIC) {
        snprintf(err, errlen,
                 "token file '%s': bad magic %d (expected %d: an llm.c .bin file, e.g. from "
                 "'canary tokenize')",
                 path, hdr[0], TOKENS_MAGIC);
        goto out;
    }
    if (hdr[1] != TOKENS_VERSION) {
        snprintf(err, errlen, "token file '%s': version %d not supported (only 1 = uint16 tokens)",
                 path, hdr[1]);
        goto out;
    }
    if (hdr[2] < 0 || (size_t)st.st_size != hdr_bytes + (size_t)hdr[2] * sizeof(uint16_t)) {
        snprintf(err, errlen,
                 "token file '%s': header says %d tokens but the file holds %lld bytes of "
                 "tokens (truncated or corrupt)",
                 path, hdr[2], (long long)st.st_size - (long long)hdr_bytes);
        goto out;
    }
    if (hdr[TOKENS_HDR_VOCAB] < 0 || hdr[TOKENS_HDR_VOCAB] > TOKENS_MAX_VOCAB) {
        snprintf(err, errlen,
                 "token file '%s': header word 3 (vocabulary size) is %d, outside 0..%d", path,
                 hdr[TOKENS_HDR_VOCAB], TOKENS_MAX_VOCAB);
        goto out;
    }
    // A learned tokenizer may emit any of its ids, so a smaller model is refused outright; a
    // byte-level file (fingerprint 0) fits whenever its bytes do (ASCII text at vocab 128).
    if (hdr[TOKENS_HDR_TOKENIZER] != 0 && hdr[TOKENS_HDR_VOCAB] > vocab) {
        snprintf(err, errlen,
                 "token file '%s' was made by a tokenizer of %d ids, more than model.vocab = %d "
                 "(set model.vocab = %d)",
                 path, hdr[TOKENS_HDR_VOCAB], vocab, hdr[TOKENS_HDR_VOCAB]);
        goto out;
    }
    tf->tokens = (const uint16_t *)((const char *)map + hdr_bytes);
    tf->n = (size_t)hdr[2];
    tf->vocab = hdr[TOKENS_HDR_VOCAB];
    tf->tokenizer = (uint32_t)hdr[TOKENS_HDR_TOKENIZER];
    for (size_t i = 0; i < tf->n; i++) {
        if (tf->tokens[i] >= vocab) {
            snprintf(err, errlen, "token file '%s': token %u at position %zu is >= vocab %d", path,
                     tf->tokens[i], i, vocab);
            goto out;
        }
    }
    tf->map = map;
    tf->map_bytes = (size_t)st.st_size;
    map = MAP_FAILED;
    rc = 0;
out:
    if (map != MAP_FAILED)
        munmap(map, (size_t)st.st_size);
    if (fd >= 0)
        close(fd);
    if (rc != 0)
        memset(tf, 0, sizeof(*tf));
    return rc;
}

void tokens_close(struct token_file *tf)
{
    if (tf->map)
        munmap(tf->map, tf->map_bytes);
    memset(tf, 0, sizeof(*tf));
}

int tokens_write(const char *path, const uint16_t *tokens, size_t n, int vocab, uint32_t tokenizer,
                 char *err, size_t errlen)
{
    int32_t hdr[TOKENS_HEADER_INTS] = {0};
    if (n > INT32_MAX) {
        snprintf(err, errlen, "write token file '%s': %zu tokens exceed the format's limit", path,
                 n);
        return -1;
    }
    hdr[0] = TOKENS_MAGIC;
    hdr[1] = TOKENS_VERSION;
    hdr[2] = (int32_t)n;
    hdr[TOKENS_HDR_VOCAB] = vocab;
    memcpy(&hdr[TOKENS_HDR_TOKENIZER], &tokenizer, sizeof(tokenizer));
    return text_write_atomic(path, hdr, sizeof(hdr), tokens, n * sizeof(*tokens), err, errlen);
}

int tokens_from_text(const char *text_path, const char *out_path, size_t *count, char *err,
                     size_t errlen)
{
    FILE *f = NULL;
    uint16_t *tok = NULL;
    size_t n = 0, cap = 1 << 20;
    int c, rc = -1;
    f = fopen(text_path, "rb");
    if (!f) {
        snprintf(err, errlen, "open text file '%s': %s", text_path, strerror(errno));
        goto out;
    }
    tok = malloc(cap * sizeof(*tok));
    if (!tok) {
        snprintf(err, errlen, "tokenize '%s': out of memory", text_path);
        goto out;
    }
    while ((c = getc(f)) != EOF) {
        if (n == cap) {
            uint16_t *grown = realloc(tok, 2 * cap * sizeof(*tok));
            if (!grown) {
                snprintf(err, errlen, "tokenize '%s': out of memory", text_path);
                goto out;
            }
            tok = grown;
            cap *= 2;
        }
        tok[n++] = (uint16_t)c;
    }
    if (ferror(f)) {
        snprintf(err, errlen, "read text file '%s': %s", text_path, strerror(errno));
        goto out;
    }
    if (n == 0) {
        snprintf(err, errlen, "text file '%s' is empty: nothing to tokenize", text_path);
        goto out;
    }
    if (tokens_write(out_path, tok, n, 256, 0, err, errlen) != 0)
        goto out;
    *count = n;
    rc = 0;
out:
    if (f)
        fclose(f);
    free(tok);
    return rc;
}
