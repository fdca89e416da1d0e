// config_validate: what a loaded config must satisfy before a run starts — the model's own
// checks (model/model_config.c), keys of variants the model does not have, the schedule, how
// the batch splits over ranks and micro-batches, and whether it fits this machine.
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "launch/config.h"
#include "launch/config_keys.h"
#include "launch/config_private.h"

static const char *origin_of(const struct config *c, const char *section, const char *key)
{
    int i = config_key_find(section, key);
    return i >= 0 ? c->origin[i] : "?";
}

// Puts section.key back to its default value and origin.
static void key_reset(struct config *c, const char *section, const char *key)
{
    char why[400];
    int i = config_key_find(section, key);
    if (i >= 0 && config_key_parse(c, &config_keys[i], config_keys[i].def, why, sizeof(why)) == 0)
        snprintf(c->origin[i], CONFIG_ORIGIN_MAX, "default");
}

// Keys of a variant that does not apply: an error when the user set them, reset to their defaults
// when a sweep switched the variant off for this point (the study's base config sets them for the
// points that have it). Otherwise the point's saved config would carry them, and `canary eval` or
// `--resume` of that point would refuse it.
static int inapplicable_keys(struct config *c, const char *const (*keys)[2], size_t n,
                             const char *switch_key, const char *why, char *err, size_t errlen)
{
    const char *dot = strchr(switch_key, '.');
    char section[16];
    snprintf(section, sizeof(section), "%.*s", (int)(dot - switch_key), switch_key);
    int swept = strcmp(origin_of(c, section, dot + 1), "sweep") == 0, in_grid = 0;
    for (int i = 0; i < c->sweep.nkeys; i++) // a study's base config: the points decide
        in_grid |= strcmp(c->sweep.key[i], switch_key) == 0;
    for (size_t i = 0; i < n; i++) {
        const char *origin = origin_of(c, keys[i][0], keys[i][1]);
        if (strcmp(origin, "default") == 0 || in_grid)
            continue;
        if (swept) {
            key_reset(c, keys[i][0], keys[i][1]);
            continue;
        }
        snprintf(err, errlen, "%s.%s is set (%s) but %s", keys[i][0], keys[i][1], origin, why);
        return -1;
    }
    return 0;
}

// Names where a model key of a model/ message came from: "model.dim = 30 is ..." gets
// " [model.dim: file.ini:4]" (model/ knows values, not origins).
static void append_origin(const struct config *c, char *err, size_t errlen)
{
    char key[64];
    if (sscanf(err, "model.%63[a-z_] =", key) != 1 || config_key_find("model", key) < 0)
        return;
    size_t len = strlen(err);
    snprintf(err + len, errlen - len, " [model.%s: %s]", key, origin_of(c, "model", key));
}

// Keys that belong to a variant the model does not have (MLA's ranks with MHA, MoE's keys
// without experts).
static int validate_variant_keys(struct config *c, char *err, size_t errlen)
{
    static const char *const mla_keys[][2] = {
        {"model", "kv_rank"}, {"model", "q_rank"}, {"model", "rope_dim"}};
    static const char *const moe_keys[][2] = {
        {"model", "top_k"},           {"model", "gate_renorm"}, {"model", "shared_experts"},
        {"model", "capacity_factor"}, {"model", "moe_every"},   {"optim", "balance_loss"},
        {"optim", "router_z_loss"},   {"model", "moe_group"}};
    if (c->model.attention != ATTN_MLA &&
        inapplicable_keys(c, mla_keys, 3, "model.attention",
                          "model.attention = mha: it only applies to model.attention = mla", err,
                          errlen) != 0)
        return -1;
    if (c->model.experts == 0 &&
        inapplicable_keys(c, moe_keys, 8, "model.experts",
                          "model.experts = 0: the model has no mixture of experts; set "
                          "model.experts or remove the key",
                          err, errlen) != 0)
        return -1;
    return 0;
}

static int validate_schedule(const struct config *c, char *err, size_t errlen)
{
    if (c->optim.min_lr > c->optim.lr) {
        snprintf(err, errlen, "optim.min_lr = %g is larger than optim.lr = %g", c->optim.min_lr,
                 c->optim.lr);
        return -1;
    }
    if (c->optim.warmup_steps > c->train.steps) {
        snprintf(err, errlen, "optim.warmup_steps = %d exceeds train.steps = %d",
                 c->optim.warmup_steps, c->train.steps);
        return -1;
    }
    return 0;
}

// How the global batch splits over ranks and micro-batches; sets *micro (sequences per forward).
static int validate_batching(const struct train_config *t, int world_size, int *micro, char *err,
                             size_t errlen)
{
    if (t->deterministic) {
        int pow2_world = (world_size & (world_size - 1)) == 0;
        int pow2_accum = (t->grad_accum & (t->grad_accum - 1)) == 0;
        if (!pow2_world) {
            snprintf(err, errlen,
                     "train.deterministic needs a power-of-two number of ranks, not %d",
                     world_size);
            return -1;
        }
        if (!pow2_accum || t->grad_accum % world_size != 0 || t->batch_size % t->grad_accum != 0) {
            snprintf(err, errlen,
                     "train.deterministic: train.grad_accum = %d counts the micro-batches of the "
                     "global batch in this mode; it must be a power of two, a multiple of the "
                     "ranks (%d) and divide train.batch_size = %d (e.g. grad_accum = 4 makes "
                     "np = 1, 2 and 4 bitwise identical)",
                     t->grad_accum, world_size, t->batch_size);
            return -1;
        }
        *micro = t->batch_size / t->grad_accum;
        return 0;
    }
    if (t->batch_size % (world_size * t->grad_accum) != 0) {
        snprintf(err, errlen,
                 "train.batch_size = %d must divide by ranks (%d) x train.grad_accum (%d)",
                 t->batch_size, world_size, t->grad_accum);
        return -1;
    }
    *micro = t->batch_size / (world_size * t->grad_accum);
    return 0;
}

// Refuses what cannot fit before anything is allocated (an OOM kill says nothing useful), and
// micro-batches whose products overflow the kernels' int indices.
static int validate_fits(const struct config *c, int micro, char *err, size_t errlen)
{
    const struct model_config *m = &c->model;
    double acts = 0.0, state = 0.0;
    double need = model_memory_estimate(m, micro, &acts, &state);
    // bf16: the rounded operands and probabilities (counted with the activations)
    double prec = model_precision_bytes(m, micro, c->train.precision, c->train.bf16_attention, 0);
    need += prec;
    acts += prec;
    double ram = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    if (ram > 0 && need > ram) {
        snprintf(err, errlen,
                 "the model needs about %.1f GiB per rank (activations %.1f GiB for micro-batches "
                 "of %d sequences, parameters and optimizer state %.1f GiB) but this machine has "
                 "%.1f GiB: raise train.grad_accum, or lower model.seq_len, model.dim or "
                 "train.batch_size",
                 need / 1073741824.0, acts / 1073741824.0, micro, state / 1073741824.0,
                 ram / 1073741824.0);
        return -1;
    }
    if ((double)micro * m->seq_len * model_max_row_width(m) > 2147483647.0) {
        snprintf(err, errlen,
                 "a micro-batch of %d sequences of %d tokens is too large for 32-bit kernel "
                 "indices: raise train.grad_accum",
                 micro, m->seq_len);
        return -1;
    }
    return 0;
}

// Mitigations that cannot work together.
static int validate_mitigations(const struct config *c, char *err, size_t errlen)
{
    if (c->optim.qk_clip > 0.0 && c->model.qk_norm) {
        snprintf(err, errlen,
                 "optim.qk_clip = %g with model.qk_norm = true: qk-norm normalises q and k per "
                 "head, so scaling W_q and W_k cannot change a logit; use one or the other",
                 c->optim.qk_clip);
        return -1;
    }
    if ((c->optim.skip_sigma > 0.0 || c->optim.update_clip_sigma > 0.0) &&
        c->optim.guard_min > c->optim.guard_window) {
        snprintf(err, errlen,
                 "optim.guard_min = %d is larger than optim.guard_window = %d: the window never "
                 "holds that many values, so the update guards would never act",
                 c->optim.guard_min, c->optim.guard_window);
        return -1;
    }
    return 0;
}

// Replaces each {section.key} in a data path by that key's resolved value, so one study can
// name a data file per swept value (data.train = data/brown_{model.vocab}.bin). The result is
// what config.ini records; a path without braces is left alone.
static int expand_path(struct config *c, const char *name, char *path, char *err, size_t errlen)
{
    char out[CONFIG_PATH_MAX], key[128], val[CONFIG_PATH_MAX];
    size_t k = 0;
    for (const char *p = path; *p; p++) {
        if (*p != '{') {
            if (*p == '}')
                goto bad;
            if (k + 1 >= sizeof(out))
                goto long_;
            out[k++] = *p;
            continue;
        }
        const char *close = strchr(p, '}');
        if (!close || (size_t)(close - p - 1) >= sizeof(key) || close == p + 1)
            goto bad;
        snprintf(key, sizeof(key), "%.*s", (int)(close - p - 1), p + 1);
        int section_ok = strncmp(key, "model.", 6) == 0 || strncmp(key, "optim.", 6) == 0 ||
                         strncmp(key, "train.", 6) == 0 || strncmp(key, "probes.", 7) == 0;
        if (!section_ok || config_get_string(c, key, val, sizeof(val)) != 0) {
            snprintf(err, errlen,
                     "%s = '%s': {%s} is not a key it can name (a [model], [optim], [train] or "
                     "[probes] key, e.g. {model.vocab}) [%s]",
                     name, path, key, origin_of(c, "data", name + 5));
            return -1;
        }
        if (k + strlen(val) >= sizeof(out))
            goto long_;
        memcpy(out + k, val, strlen(val));
        k += strlen(val);
        p = close;
    }
    out[k] = '\0';
    memcpy(path, out, k + 1);
    return 0;
bad:
    snprintf(err, errlen, "%s = '%s': unbalanced braces (a placeholder is {section.key}) [%s]",
             name, path, origin_of(c, "data", name + 5));
    return -1;
long_:
    snprintf(err, errlen, "%s = '%s': longer than %d characters once expanded", name, path,
             CONFIG_PATH_MAX - 1);
    return -1;
}

int config_validate(struct config *c, int world_size, int need_data, char *err, size_t errlen)
{
    int micro = 0;
    if (model_config_resolve(&c->model, err, errlen) != 0) {
        append_origin(c, err, errlen);
        return -1;
    }
    if (validate_variant_keys(c, err, errlen) != 0 || validate_schedule(c, err, errlen) != 0 ||
        validate_mitigations(c, err, errlen) != 0 ||
        validate_batching(&c->train, world_size, &micro, err, errlen) != 0 ||
        validate_fits(c, micro, err, errlen) != 0)
        return -1;
    if (expand_path(c, "data.train", c->data.train, err, errlen) != 0 ||
        expand_path(c, "data.val", c->data.val, err, errlen) != 0)
        return -1;
    if (need_data && c->data.train[0] == '\0') {
        snprintf(err, errlen, "data.train is not set: give a token file (see 'canary tokenize')");
        return -1;
    }
    return 0;
}
