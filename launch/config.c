// Config loading, overrides, validation and output, all driven by the key table.
#include "launch/config.h"

#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "launch/config_keys.h"

// ---- key lookup and suggestions ----

static int key_find(const char *section, const char *key)
{
    for (int i = 0; i < config_key_count; i++)
        if (strcmp(config_keys[i].section, section) == 0 && strcmp(config_keys[i].key, key) == 0)
            return i;
    return -1;
}

static int edit_distance(const char *a, const char *b)
{
    int la = (int)strlen(a), lb = (int)strlen(b);
    int row[128];
    if (la > 120 || lb > 120)
        return 1000;
    for (int j = 0; j <= lb; j++)
        row[j] = j;
    for (int i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = i;
        for (int j = 1; j <= lb; j++) {
            int up = row[j];
            int cost = a[i - 1] == b[j - 1] ? 0 : 1;
            int best = diag + cost;
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

// Nearest "section.key" to the unknown one; keys in the same section win ties.
static void key_suggest(const char *section, const char *key, char *out, size_t outlen)
{
    char want[256];
    int best = 1 << 30, besti = -1;
    snprintf(want, sizeof(want), "%s.%s", section, key);
    for (int i = 0; i < config_key_count; i++) {
        char have[256];
        snprintf(have, sizeof(have), "%s.%s", config_keys[i].section, config_keys[i].key);
        int d = edit_distance(want, have) * 2 + (strcmp(section, config_keys[i].section) != 0);
        int dk = edit_distance(key, config_keys[i].key) * 2 + 1;
        if (dk < d)
            d = dk; // right key name in the wrong section
        // a prefix or part of a real key ("warmup" for "warmup_steps") is a strong hint
        if (strlen(key) >= 3 && strstr(config_keys[i].key, key) &&
            strcmp(section, config_keys[i].section) == 0 && d > 2)
            d = 2;
        if (d < best) {
            best = d;
            besti = i;
        }
    }
    out[0] = '\0';
    if (besti >= 0 && best <= 2 * (int)(strlen(key) / 2 + 2))
        snprintf(out, outlen, " (did you mean '%s.%s'?)", config_keys[besti].section,
                 config_keys[besti].key);
}

// ---- parsing one value ----

static const char *skip_space(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

static void describe_range(const struct config_key *k, char *out, size_t outlen)
{
    switch (k->type) {
    case CT_INT:
    case CT_I64:
        snprintf(out, outlen, "an integer in [%.0f, %.0f]", k->lo, k->hi);
        break;
    case CT_DOUBLE:
        snprintf(out, outlen, "a number in %s%g, %g]", k->lo_open ? "(" : "[", k->lo, k->hi);
        break;
    case CT_BOOL:
        snprintf(out, outlen, "true or false");
        break;
    case CT_ENUM: {
        // "a|b" → "one of a, b" ('|' would also break the markdown table)
        size_t o = (size_t)snprintf(out, outlen, "one of ");
        for (const char *p = k->choices; *p && o + 3 < outlen; p++) {
            if (*p == '|') {
                out[o++] = ',';
                out[o++] = ' ';
            } else {
                out[o++] = *p;
            }
        }
        out[o] = '\0';
        break;
    }
    case CT_PATH:
        snprintf(out, outlen, "a path");
        break;
    }
}

static int in_range(const struct config_key *k, double v)
{
    if (!isfinite(v) || v > k->hi)
        return 0;
    return k->lo_open ? v > k->lo : v >= k->lo;
}

// Parses value into c's field of key k. Returns 0 or -1 (with what was wrong in err).
static int key_parse(struct config *c, const struct config_key *k, const char *value, char *err,
                     size_t errlen)
{
    char *field = (char *)c + k->offset;
    char range[160], *end = NULL;
    const char *v = skip_space(value);
    describe_range(k, range, sizeof(range));
    switch (k->type) {
    case CT_INT:
    case CT_I64: {
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (end == v || *skip_space(end) != '\0' || errno != 0) {
            snprintf(err, errlen, "%s.%s = '%s' is not an integer (expected %s)", k->section,
                     k->key, value, range);
            return -1;
        }
        if (!in_range(k, (double)x)) {
            snprintf(err, errlen, "%s.%s = %lld is out of range (expected %s)", k->section, k->key,
                     x, range);
            return -1;
        }
        if (k->type == CT_INT)
            *(int *)field = (int)x;
        else
            *(int64_t *)field = (int64_t)x;
        return 0;
    }
    case CT_DOUBLE: {
        errno = 0;
        double x = strtod(v, &end);
        if (end == v || *skip_space(end) != '\0' || errno == ERANGE) {
            snprintf(err, errlen, "%s.%s = '%s' is not a number (expected %s)", k->section, k->key,
                     value, range);
            return -1;
        }
        if (!in_range(k, x)) {
            snprintf(err, errlen, "%s.%s = %g is out of range (expected %s)", k->section, k->key, x,
                     range);
            return -1;
        }
        *(double *)field = x;
        return 0;
    }
    case CT_BOOL:
        if (strcasecmp(v, "true") == 0 || strcmp(v, "1") == 0 || strcasecmp(v, "yes") == 0) {
            *(int *)field = 1;
            return 0;
        }
        if (strcasecmp(v, "false") == 0 || strcmp(v, "0") == 0 || strcasecmp(v, "no") == 0) {
            *(int *)field = 0;
            return 0;
        }
        snprintf(err, errlen, "%s.%s = '%s' is not a boolean (expected true or false)", k->section,
                 k->key, value);
        return -1;
    case CT_ENUM: {
        const char *p = k->choices;
        int idx = 0;
        size_t vlen = strlen(v);
        while (*p) {
            const char *bar = strchr(p, '|');
            size_t len = bar ? (size_t)(bar - p) : strlen(p);
            if (len == vlen && strncmp(p, v, len) == 0) {
                *(int *)field = idx;
                return 0;
            }
            idx++;
            p += len + (bar ? 1 : 0);
        }
        snprintf(err, errlen, "%s.%s = '%s' is not allowed (expected %s)", k->section, k->key,
                 value, range);
        return -1;
    }
    case CT_PATH:
        if (strlen(v) >= CONFIG_PATH_MAX) {
            snprintf(err, errlen, "%s.%s: path longer than %d characters", k->section, k->key,
                     CONFIG_PATH_MAX - 1);
            return -1;
        }
        snprintf(field, CONFIG_PATH_MAX, "%s", v);
        return 0;
    }
    return -1;
}

// ---- defaults, file, --set ----

void config_defaults(struct config *c)
{
    char err[256];
    memset(c, 0, sizeof(*c));
    if (config_key_count > CONFIG_MAX_KEYS) {
        fprintf(stderr, "canary: the key table outgrew CONFIG_MAX_KEYS\n");
        abort();
    }
    for (int i = 0; i < config_key_count; i++) {
        if (key_parse(c, &config_keys[i], config_keys[i].def, err, sizeof(err)) != 0) {
            fprintf(stderr, "canary: bad default in the key table: %s\n", err);
            abort();
        }
        snprintf(c->origin[i], CONFIG_ORIGIN_MAX, "default");
    }
    c->sweep.ranks_per_run = 1;
}

struct ini_state {
    struct config *c;
    const char *path;
    char err[512];
    int lineno;   // counted by the line callback below: libinih gives handlers no line numbers
    int err_line; // line of the first error (libinih goes on parsing after an error)
};

// A [sweep] entry: "ranks_per_run = N" or "section.key = v1, v2, ...". The values are checked
// when the grid is expanded (launch/sweep.c), each by the key's own parser.
static int sweep_entry(struct ini_state *st, const char *name, const char *value)
{
    struct sweep_config *sw = &st->c->sweep;
    char suggestion[160];
    if (strcmp(name, "ranks_per_run") == 0) {
        char *end = NULL;
        long v = strtol(value, &end, 10);
        if (end == value || *skip_space(end) != '\0' || v < 1 || v > 1048576) {
            snprintf(st->err, sizeof(st->err),
                     "sweep.ranks_per_run = '%s' is not an integer in [1, 1048576]", value);
            return 0;
        }
        sw->ranks_per_run = (int)v;
        return 1;
    }
    const char *dot = strchr(name, '.');
    char section[64] = "";
    if (dot && (size_t)(dot - name) < sizeof(section))
        snprintf(section, sizeof(section), "%.*s", (int)(dot - name), name);
    if (!dot || key_find(section, dot + 1) < 0) {
        key_suggest(dot ? section : "", dot ? dot + 1 : name, suggestion, sizeof(suggestion));
        snprintf(st->err, sizeof(st->err),
                 "[sweep] '%s' is not a config key (expected section.key = v1, v2, ... or "
                 "ranks_per_run)%s",
                 name, suggestion);
        return 0;
    }
    for (int i = 0; i < sw->nkeys; i++) {
        if (strcmp(sw->key[i], name) == 0) {
            snprintf(st->err, sizeof(st->err), "[sweep] '%s' is listed twice", name);
            return 0;
        }
    }
    if (sw->nkeys == SWEEP_MAX_KEYS || strlen(name) >= sizeof(sw->key[0]) ||
        strlen(value) >= SWEEP_VALUES_MAX) {
        snprintf(st->err, sizeof(st->err), "[sweep] too many keys or values (at most %d keys)",
                 SWEEP_MAX_KEYS);
        return 0;
    }
    if (*skip_space(value) == '\0') {
        snprintf(st->err, sizeof(st->err), "[sweep] '%s' has an empty value list", name);
        return 0;
    }
    snprintf(sw->key[sw->nkeys], sizeof(sw->key[0]), "%s", name);
    snprintf(sw->values[sw->nkeys], SWEEP_VALUES_MAX, "%s", value);
    sw->line[sw->nkeys] = st->lineno;
    sw->nkeys++;
    return 1;
}

static int config_ini_entry(struct ini_state *st, const char *section, const char *name,
                            const char *value);

// libinih calls this per key; returning 0 makes ini_parse report the current line. Only the
// first error is kept: libinih goes on parsing after one.
static int config_ini_handler(void *user, const char *section, const char *name, const char *value)
{
    struct ini_state *st = user;
    char saved[sizeof(st->err)];
    int had_error = st->err[0] != '\0';
    if (had_error)
        memcpy(saved, st->err, sizeof(saved));
    int ok = config_ini_entry(st, section, name, value);
    if (had_error)
        memcpy(st->err, saved, sizeof(saved));
    else if (!ok)
        st->err_line = st->lineno;
    return ok;
}

static int config_ini_entry(struct ini_state *st, const char *section, const char *name,
                            const char *value)
{
    char suggestion[160], why[400];
    if (strcmp(section, "sweep") == 0)
        return sweep_entry(st, name, value);
    int i = key_find(section, name);
    if (i < 0) {
        key_suggest(section, name, suggestion, sizeof(suggestion));
        snprintf(st->err, sizeof(st->err), "unknown key '%s' in section [%s]%s", name, section,
                 suggestion);
        return 0;
    }
    if (key_parse(st->c, &config_keys[i], value, why, sizeof(why)) != 0) {
        snprintf(st->err, sizeof(st->err), "%s", why);
        return 0;
    }
    return 1;
}

// fgets for libinih that also counts lines, so [sweep] entries can remember where they were set.
struct line_reader {
    FILE *f;
    struct ini_state *st;
};

static char *read_line(char *str, int num, void *stream)
{
    struct line_reader *lr = stream;
    char *got = fgets(str, num, lr->f);
    if (!got)
        return NULL;
    lr->st->lineno++;
    size_t len = strlen(got);
    if (len == (size_t)num - 1 && got[len - 1] != '\n' && !feof(lr->f)) {
        // libinih would split the line silently; stop and say so instead
        if (!lr->st->err[0]) {
            snprintf(lr->st->err, sizeof(lr->st->err), "line longer than %d characters", num - 2);
            lr->st->err_line = lr->st->lineno;
        }
        return NULL;
    }
    return got;
}

int config_load_file(struct config *c, const char *path, char *err, size_t errlen)
{
    struct ini_state st;
    FILE *f = NULL;
    struct config before = *c;
    struct stat fst;
    int line = 0;
    memset(&st, 0, sizeof(st));
    st.c = c;
    st.path = path;
    if (stat(path, &fst) == 0 && !S_ISREG(fst.st_mode)) { // a FIFO would block in fopen
        snprintf(err, errlen, "read config '%s': not a regular file", path);
        return -1;
    }
    f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "read config '%s': %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fileno(f), &fst) != 0 || !S_ISREG(fst.st_mode)) {
        snprintf(err, errlen, "read config '%s': not a regular file", path);
        fclose(f);
        return -1;
    }
    struct line_reader lr = {f, &st};
    line = ini_parse_stream(read_line, &lr, config_ini_handler, &st);
    fclose(f);
    if (line != 0 || st.err[0]) {
        *c = before;
        // the earliest problem wins: a syntax error (line > 0, no message) or a bad entry
        if (st.err[0] && (line <= 0 || st.err_line <= line))
            snprintf(err, errlen, "%s:%d: %s", path, st.err_line, st.err);
        else if (line > 0)
            snprintf(err, errlen, "%s:%d: syntax error (expected '[section]' or 'key = value')",
                     path, line);
        else
            snprintf(err, errlen, "read config '%s': cannot parse (%d)", path, line);
        return -1;
    }
    snprintf(c->source, sizeof(c->source), "%s", path);
    // Origins: which keys differ from before reading this file. A key set to the value it
    // already had keeps its old origin, which is harmless for messages.
    for (int i = 0; i < config_key_count; i++) {
        const struct config_key *k = &config_keys[i];
        size_t sz = k->type == CT_PATH     ? CONFIG_PATH_MAX
                    : k->type == CT_DOUBLE ? sizeof(double)
                    : k->type == CT_I64    ? sizeof(int64_t)
                                           : sizeof(int);
        if (memcmp((char *)c + k->offset, (char *)&before + k->offset, sz) != 0)
            snprintf(c->origin[i], CONFIG_ORIGIN_MAX, "%.80s", path);
    }
    return 0;
}

int config_load_string(struct config *c, const char *text, const char *name, char *err,
                       size_t errlen)
{
    struct ini_state st;
    struct config before = *c;
    memset(&st, 0, sizeof(st));
    st.c = c;
    st.path = name;
    int line = ini_parse_string(text, config_ini_handler, &st);
    if (line != 0 || st.err[0]) {
        *c = before;
        snprintf(err, errlen, "%s: config line %d: %s", name, st.err[0] ? st.err_line : line,
                 st.err[0] ? st.err : "syntax error");
        return -1;
    }
    return 0;
}

int config_set(struct config *c, const char *assignment, char *err, size_t errlen)
{
    return config_set_from(c, assignment, "--set", err, errlen);
}

int config_set_from(struct config *c, const char *assignment, const char *origin, char *err,
                    size_t errlen)
{
    char section[64], key[64], suggestion[160], why[400];
    const char *prefix = strcmp(origin, "--set") == 0 ? "--set " : "";
    const char *dot = strchr(assignment, '.');
    const char *eq = strchr(assignment, '=');
    if (!dot || !eq || dot > eq || (size_t)(dot - assignment) >= sizeof(section) ||
        (size_t)(eq - dot - 1) >= sizeof(key)) {
        snprintf(err, errlen, "%s'%s': expected section.key=value", prefix, assignment);
        return -1;
    }
    snprintf(section, sizeof(section), "%.*s", (int)(dot - assignment), assignment);
    snprintf(key, sizeof(key), "%.*s", (int)(eq - dot - 1), dot + 1);
    // tolerate "key = value" spacing
    for (char *p = key + strlen(key); p > key && (p[-1] == ' ' || p[-1] == '\t'); p--)
        p[-1] = '\0';
    int i = key_find(section, key);
    if (i < 0) {
        key_suggest(section, key, suggestion, sizeof(suggestion));
        snprintf(err, errlen, "%s%s: unknown key '%s.%s'%s", prefix, assignment, section, key,
                 suggestion);
        return -1;
    }
    if (key_parse(c, &config_keys[i], eq + 1, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "%s%s: %s", prefix, assignment, why);
        return -1;
    }
    snprintf(c->origin[i], CONFIG_ORIGIN_MAX, "%s", origin);
    return 0;
}

// ---- validation ----

static const char *origin_of(const struct config *c, const char *section, const char *key)
{
    int i = key_find(section, key);
    return i >= 0 ? c->origin[i] : "?";
}

// Puts section.key back to its default value and origin.
static void key_reset(struct config *c, const char *section, const char *key)
{
    char why[400];
    int i = key_find(section, key);
    if (i >= 0 && key_parse(c, &config_keys[i], config_keys[i].def, why, sizeof(why)) == 0)
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
    if (sscanf(err, "model.%63[a-z_] =", key) != 1 || key_find("model", key) < 0)
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
static int validate_fits(const struct model_config *m, int micro, char *err, size_t errlen)
{
    double acts = 0.0, state = 0.0;
    double need = model_memory_estimate(m, micro, &acts, &state);
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

int config_validate(struct config *c, int world_size, int need_data, char *err, size_t errlen)
{
    int micro = 0;
    if (model_config_resolve(&c->model, err, errlen) != 0) {
        append_origin(c, err, errlen);
        return -1;
    }
    if (validate_variant_keys(c, err, errlen) != 0 || validate_schedule(c, err, errlen) != 0 ||
        validate_batching(&c->train, world_size, &micro, err, errlen) != 0 ||
        validate_fits(&c->model, micro, err, errlen) != 0)
        return -1;
    if (need_data && c->data.train[0] == '\0') {
        snprintf(err, errlen, "data.train is not set: give a token file (see 'canary tokenize')");
        return -1;
    }
    return 0;
}

// ---- output ----

static void key_format(const struct config *c, const struct config_key *k, char *out, size_t outlen)
{
    const char *field = (const char *)c + k->offset;
    switch (k->type) {
    case CT_INT:
        snprintf(out, outlen, "%d", *(const int *)field);
        break;
    case CT_I64:
        snprintf(out, outlen, "%lld", (long long)*(const int64_t *)field);
        break;
    case CT_DOUBLE: {
        // shortest text that reads back to the same double
        double v = *(const double *)field;
        for (int prec = 6; prec <= 17; prec++) {
            snprintf(out, outlen, "%.*g", prec, v);
            if (strtod(out, NULL) == v)
                break;
        }
        break;
    }
    case CT_BOOL:
        snprintf(out, outlen, "%s", *(const int *)field ? "true" : "false");
        break;
    case CT_ENUM: {
        int idx = *(const int *)field;
        const char *p = k->choices;
        for (int j = 0; j < idx && p; j++) {
            p = strchr(p, '|');
            if (p)
                p++;
        }
        const char *bar = p ? strchr(p, '|') : NULL;
        snprintf(out, outlen, "%.*s", p ? (int)(bar ? (size_t)(bar - p) : strlen(p)) : 1,
                 p ? p : "?");
        break;
    }
    case CT_PATH:
        snprintf(out, outlen, "%s", field);
        break;
    }
}

int config_get_string(const struct config *c, const char *dotted, char *out, size_t outlen)
{
    for (int i = 0; i < config_key_count; i++) {
        char name[160];
        snprintf(name, sizeof(name), "%s.%s", config_keys[i].section, config_keys[i].key);
        if (strcmp(name, dotted) == 0) {
            key_format(c, &config_keys[i], out, outlen);
            return 0;
        }
    }
    return -1;
}

void config_write(const struct config *c, FILE *f)
{
    const char *section = "";
    char value[CONFIG_PATH_MAX + 32];
    fprintf(f, "; resolved canary config%s%s\n", c->source[0] ? " from " : "", c->source);
    for (int i = 0; i < config_key_count; i++) {
        const struct config_key *k = &config_keys[i];
        if (strcmp(section, k->section) != 0) {
            fprintf(f, "\n[%s]\n", k->section);
            section = k->section;
        }
        key_format(c, k, value, sizeof(value));
        fprintf(f, "%s = %s", k->key, value);
        if (strcmp(c->origin[i], "default") != 0)
            fprintf(f, "  ; %s", c->origin[i]);
        fputc('\n', f);
    }
}

void config_write_markdown(FILE *f)
{
    const char *section = "";
    char range[160];
    fprintf(f, "# canary configuration reference\n\n"
               "Generated by `canary config --markdown` from the key table in "
               "`launch/config_keys.c`; a test checks that this file matches it.\n\n"
               "Config files are INI (`[section]`, `key = value`, `;` or `#` comments). Every key "
               "has a default; an unknown key or a bad value is an error naming the file, line "
               "and key. `--set section.key=value` overrides a key from the command line. The "
               "resolved config is written to `config.ini` in the run directory.\n");
    for (int i = 0; i < config_key_count; i++) {
        const struct config_key *k = &config_keys[i];
        if (strcmp(section, k->section) != 0) {
            fprintf(f, "\n## [%s]\n\n| key | default | allowed | meaning |\n|---|---|---|---|\n",
                    k->section);
            section = k->section;
        }
        describe_range(k, range, sizeof(range));
        fprintf(f, "| `%s` | `%s` | %s | %s |\n", k->key, k->def[0] ? k->def : "(empty)", range,
                k->doc);
    }
}
