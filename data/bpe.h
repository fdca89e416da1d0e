// provides: BPE tokenizers through SentencePiece (Debian's libsentencepiece): train one on a text,
//           encode, decode. A C interface over the thin C++ shim data/bpe.cc, the only C++ in
//           canary; everything else calls these functions.
//
// The tokenizer is lossless: SentencePiece BPE with byte fallback, the identity normaliser, no
// dummy prefix and no whitespace folding, so decode(encode(text)) == text for any UTF-8 text
// without U+2581 (SentencePiece's stand-in for a space, which decodes as one; data/tokenizer.c
// refuses such text).
// Ids: 0 = <unk> (never produced: byte fallback covers every byte), 1..256 the bytes <0x00>..
// <0xFF>, then the learned pieces; no <s> or </s>. A model is kept as its serialized bytes (the
// .model file SentencePiece's own tools read), so canary can fingerprint and copy it.
#ifndef CANARY_DATA_BPE_H
#define CANARY_DATA_BPE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// The smallest vocabulary a BPE tokenizer can have: <unk>, the 256 bytes and a few pieces.
#define BPE_MIN_VOCAB 300

struct bpe; // a loaded tokenizer (opaque)

// Trains a BPE tokenizer of exactly `vocab` ids on text[len] (valid UTF-8; lines are the
// training sentences, a long line is cut into pieces). *model receives the serialized model
// (malloc'd, *model_len bytes). Returns 0, or -1 with SentencePiece's reason in err (one line).
int bpe_train(const char *text, size_t len, int vocab, char **model, size_t *model_len, char *err,
              size_t errlen);

// Loads a serialized model (as bpe_train writes it, or a .model file's bytes). NULL on failure
// with the reason in err.
struct bpe *bpe_load(const char *model, size_t model_len, char *err, size_t errlen);
void bpe_free(struct bpe *b);

// The number of ids the model has.
int bpe_vocab(const struct bpe *b);

// Encodes text[len] line by line (a piece never spans a newline, so this equals encoding the
// whole text). *ids receives a malloc'd array of *n ids. Returns 0 or -1 with a reason in err.
int bpe_encode(const struct bpe *b, const char *text, size_t len, uint16_t **ids, size_t *n,
               char *err, size_t errlen);

// Decodes ids[n] into *text (malloc'd, NUL-terminated, *len bytes without the NUL). Every id must
// be < bpe_vocab(b). A window of ids that cuts a UTF-8 character decodes its bytes as U+FFFD.
// Returns 0 or -1 with a reason in err.
int bpe_decode(const struct bpe *b, const uint16_t *ids, size_t n, char **text, size_t *len,
               char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
