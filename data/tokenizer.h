// provides: the tokenizer of a token file, byte-level (vocab 256) or BPE (data/bpe.h), made,
//           found and checked against the file; making a token file from text with either.
//
// A BPE token file X.bin has its tokenizer beside it as X.model (SentencePiece's own format),
// and its header records the tokenizer's vocabulary size and fingerprint (data/tokens.h), so a
// model file that does not belong to a token file is caught.
#ifndef CANARY_DATA_TOKENIZER_H
#define CANARY_DATA_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "data/tokens.h"

struct bpe;

struct tokenizer {
    int vocab;       // number of ids
    uint32_t id;     // fingerprint: FNV-1a of the model file's bytes, never 0; 0 = byte-level
    struct bpe *bpe; // NULL: byte-level
};

// FNV-1a (32 bit) of bytes[n], with 0 mapped to 1 (0 means byte-level in a header).
uint32_t tokenizer_fingerprint(const void *bytes, size_t n);

// The model file beside a token file: X.bin -> X.model (any other name gets .model appended).
void tokenizer_model_path(const char *bin_path, char *out, size_t outlen);

// Loads a SentencePiece model file. Returns 0 or -1 with a reason naming the file.
int tokenizer_load(struct tokenizer *t, const char *model_path, char *err, size_t errlen);

// The tokenizer of the open token file tf (at bin_path): model_path if given, else the .model
// beside the file, else byte-level when the file's ids are bytes. Refuses a model whose
// fingerprint or size differs from what the file's header records. Returns 0 or -1.
int tokenizer_for_file(struct tokenizer *t, const struct token_file *tf, const char *bin_path,
                       const char *model_path, char *err, size_t errlen);

void tokenizer_free(struct tokenizer *t);

// Decodes ids[n] into *text (malloc'd, NUL-terminated, *len bytes): byte-level ids are the bytes
// themselves. Returns 0 or -1 (an id outside the tokenizer) with a reason in err.
int tokenizer_decode(const struct tokenizer *t, const uint16_t *ids, size_t n, char **text,
                     size_t *len, char *err, size_t errlen);

// What tokenizer_make_file did.
struct tokenize_result {
    size_t bytes, tokens; // text bytes in, tokens out
    int vocab;
    uint32_t id;
    int trained;          // 1: a new BPE tokenizer was trained; 0: reused or byte-level
    double train_seconds; // time spent training it
};

// Turns the text file text_path into the token file out_bin:
//   model_path set: encode with that BPE tokenizer (vocab must be 0 or its size);
//   vocab 256 (or 0) and no model: byte-level;
//   vocab in [BPE_MIN_VOCAB, 65536]: train a BPE tokenizer of that size on the text.
// A BPE file gets its model written (or copied) beside it as out_bin's .model. The text must be
// non-empty, and UTF-8 for BPE. Nothing is left half-written on failure. Returns 0 or -1.
int tokenizer_make_file(const char *text_path, const char *out_bin, int vocab,
                        const char *model_path, struct tokenize_result *res, char *err,
                        size_t errlen);

#endif
