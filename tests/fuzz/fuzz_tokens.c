// Fuzzes the token-file reader: the input is the file. When tokens_open accepts it, every token
// must be below the vocabulary it was opened with (the contract the sampler relies on).
#include <stdio.h>
#include <stdlib.h>

#include "data/tokens.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int vocabs[] = {2, 256, 50257, 65536};
    struct token_file tf;
    char err[1024];
    // The vocabulary comes from the last byte, so the file itself starts at the first.
    int vocab = vocabs[size ? data[size - 1] % 4 : 0];
    const char *path = fuzz_file("tokens", data, size);
    err[0] = '\0';
    if (tokens_open(&tf, path, vocab, err, sizeof(err)) != 0) {
        if (err[0] == '\0')
            abort();
        return 0;
    }
    for (size_t i = 0; i < tf.n; i++)
        if (tf.tokens[i] >= vocab)
            abort();
    tokens_close(&tf);
    return 0;
}
