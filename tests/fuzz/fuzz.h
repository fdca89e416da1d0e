// provides: the contract shared by canary's fuzz harnesses (tests/fuzz/fuzz_*.c).
//
// Each harness defines LLVMFuzzerTestOneInput (and may define LLVMFuzzerInitialize). Built with
// clang and CANARY_FUZZ=ON they link libFuzzer; otherwise replay.c supplies main() and feeds the
// committed corpus to the same function, so every build replays the corpora.
#ifndef CANARY_TESTS_FUZZ_H
#define CANARY_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

// A file holding data[0, size), created once per process in $TMPDIR and rewritten per input.
// data may be NULL when size is 0. Returns its path; aborts when the file cannot be written (the
// harness is then useless).
const char *fuzz_file(const char *tag, const uint8_t *data, size_t size);

#endif
