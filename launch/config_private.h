// provides: the key-table helpers config.c, config_validate.c and config_write.c share. Private
//           to launch/'s config files.
#ifndef CANARY_LAUNCH_CONFIG_PRIVATE_H
#define CANARY_LAUNCH_CONFIG_PRIVATE_H

#include <stddef.h>

#include "launch/config.h"
#include "launch/config_keys.h"

// Index of section.key in config_keys, or -1.
int config_key_find(const char *section, const char *key);

// The allowed values or range of key k, for messages and docs/config.md.
void config_describe_range(const struct config_key *k, char *out, size_t outlen);

// Parses value into c's field of key k. Returns 0 or -1 (with what was wrong in err).
int config_key_parse(struct config *c, const struct config_key *k, const char *value, char *err,
                     size_t errlen);

#endif
