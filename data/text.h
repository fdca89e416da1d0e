// provides: reading a whole text file and checking that it is UTF-8, for the tokenizers.
#ifndef CANARY_DATA_TEXT_H
#define CANARY_DATA_TEXT_H

#include <stddef.h>

// Reads path into *buf (malloc'd, NUL-terminated, *len bytes without the NUL). An empty file is
// refused. Returns 0 or -1 with a one-line reason in err naming the file as `what` ("text file",
// "tokenizer file").
int text_read(const char *path, const char *what, char **buf, size_t *len, char *err,
              size_t errlen);

// Checks that s[len] is well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing
// above U+10FFFF). Returns 0, or -1 with *offset at the first byte of the first bad character.
int text_check_utf8(const char *s, size_t len, size_t *offset);

// Writes head[nhead] then body[nbody] to path through a temporary file (path.tmp.PID) and a
// rename, so a failure leaves neither a partial file nor the temporary one. Returns 0 or -1 with
// a reason naming the file.
int text_write_atomic(const char *path, const void *head, size_t nhead, const void *body,
                      size_t nbody, char *err, size_t errlen);

#endif
