// provides: token files in llm.c's .bin layout — read (mmap, validated), write (atomic), and the
//           byte-level tokenizer.
//
// Layout: a header of 256 little-endian int32 (magic 20240520, version 1 = uint16 tokens, token
// count, the rest 0), then the tokens. Shards made for llm.c load unchanged. canary records two
// more header words, which llm.c ignores: [3] the tokenizer's vocabulary size and [4] the
// tokenizer's fingerprint (FNV-1a of its model file; 0 for byte-level). 0 means not recorded, as
// in llm.c's own files.
#ifndef CANARY_DATA_TOKENS_H
#define CANARY_DATA_TOKENS_H

#include <stddef.h>
#include <stdint.h>

#define TOKENS_MAGIC         20240520
#define TOKENS_VERSION       1
#define TOKENS_HEADER_INTS   256
#define TOKENS_HDR_VOCAB     3 // header word: the tokenizer's vocabulary size (0: not recorded)
#define TOKENS_HDR_TOKENIZER 4 // header word: the tokenizer's fingerprint (0: byte-level or none)
#define TOKENS_MAX_VOCAB     65536 // uint16 tokens

struct token_file {
    const uint16_t *tokens; // [n], read-only mapping
    size_t n;
    int vocab;          // the header's vocabulary size, 0 when not recorded
    uint32_t tokenizer; // the header's tokenizer fingerprint, 0 when byte-level or not recorded
    void *map;          // the whole mapping (header included)
    size_t map_bytes;
};

// Maps path and validates it: size, magic, version, count, every token < vocab, and, for a file
// a learned tokenizer made, a recorded vocabulary size no larger than vocab (a model smaller than
// its tokenizer is refused even when the ids happen to fit).
// Returns 0, or -1 with a one-line reason in err (naming the file).
int tokens_open(struct token_file *tf, const char *path, int vocab, char *err, size_t errlen);
void tokens_close(struct token_file *tf);

// Writes tokens[n] to path through a temporary file and rename, so a failure leaves no partial
// file; vocab and tokenizer go into the header (0: not recorded). Returns 0 or -1 with a reason
// in err.
int tokens_write(const char *path, const uint16_t *tokens, size_t n, int vocab, uint32_t tokenizer,
                 char *err, size_t errlen);

// Byte-level tokenisation of a text file (vocab 256: token = byte value) into a token file.
// An empty file is refused. Returns 0 or -1 with a reason in err; *count receives the number of
// tokens.
int tokens_from_text(const char *text_path, const char *out_path, size_t *count, char *err,
                     size_t errlen);

#endif
