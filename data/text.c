// Whole-file text I/O for the tokenizers: a corpus is read at once (Brown is 6 MB; a tokenizer
// needs all of it anyway), checked, and files are replaced atomically.
#include "data/text.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int text_read(const char *path, const char *what, char **buf, size_t *len, char *err, size_t errlen)
{
    struct stat st;
    FILE *f = NULL;
    char *b = NULL;
    int rc = -1;
    *buf = NULL;
    *len = 0;
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "open %s '%s': %s", what, path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s '%s': not a regular file", what, path);
        goto out;
    }
    if (st.st_size == 0) {
        snprintf(err, errlen, "%s '%s' is empty", what, path);
        goto out;
    }
    f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "open %s '%s': %s", what, path, strerror(errno));
        goto out;
    }
    b = malloc((size_t)st.st_size + 1);
    if (!b) {
        snprintf(err, errlen, "read %s '%s': out of memory (%lld bytes)", what, path,
                 (long long)st.st_size);
        goto out;
    }
    if (fread(b, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
        snprintf(err, errlen, "read %s '%s': %s", what, path,
                 ferror(f) ? strerror(errno) : "shorter than its size");
        goto out;
    }
    b[st.st_size] = '\0';
    *buf = b;
    *len = (size_t)st.st_size;
    b = NULL;
    rc = 0;
out:
    if (f)
        fclose(f);
    free(b);
    return rc;
}

int text_check_utf8(const char *s, size_t len, size_t *offset)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        unsigned c = u[i];
        size_t need;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1, cp = c & 0x1F, min = 0x80;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2, cp = c & 0x0F, min = 0x800;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3, cp = c & 0x07, min = 0x10000;
        } else {
            *offset = i;
            return -1;
        }
        if (len - i <= need) {
            *offset = i;
            return -1;
        }
        for (size_t k = 1; k <= need; k++) {
            if ((u[i + k] & 0xC0) != 0x80) {
                *offset = i; // the character that starts here is cut short
                return -1;
            }
            cp = (cp << 6) | (u[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            *offset = i;
            return -1;
        }
        i += need + 1;
    }
    return 0;
}

int text_write_atomic(const char *path, const void *head, size_t nhead, const void *body,
                      size_t nbody, char *err, size_t errlen)
{
    char tmp[4096];
    FILE *f = NULL;
    int rc = -1;
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    f = fopen(tmp, "wb");
    if (!f || (nhead && fwrite(head, 1, nhead, f) != nhead) ||
        (nbody && fwrite(body, 1, nbody, f) != nbody)) {
        snprintf(err, errlen, "write '%s': %s", tmp, strerror(errno));
        goto out;
    }
    int closed = fclose(f);
    f = NULL;
    if (closed != 0) {
        snprintf(err, errlen, "write '%s': %s", tmp, strerror(errno));
        goto out;
    }
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "rename '%s' to '%s': %s", tmp, path, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (f)
        fclose(f);
    if (rc != 0)
        unlink(tmp);
    return rc;
}
