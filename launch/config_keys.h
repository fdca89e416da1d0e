// provides: the config key table — the single list of keys, types, defaults, ranges and docs.
#ifndef CANARY_LAUNCH_CONFIG_KEYS_H
#define CANARY_LAUNCH_CONFIG_KEYS_H

#include <stddef.h>

enum config_type { CT_INT, CT_I64, CT_DOUBLE, CT_BOOL, CT_ENUM, CT_PATH };

struct config_key {
    const char *section, *key;
    enum config_type type;
    size_t offset;       // into struct config
    const char *def;     // default, as it would be written in a file
    double lo, hi;       // inclusive range (numbers)
    int lo_open;         // 1: the lower bound is exclusive (lr > 0)
    const char *choices; // CT_ENUM: "a|b|c"; the stored int is the index
    const char *doc;     // one line for docs/config.md
};

extern const struct config_key config_keys[];
extern const int config_key_count;

#endif
