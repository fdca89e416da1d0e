// Config loading and overrides, driven by the key table (validation: config_validate.c; output:
// config_write.c).
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
#include "launch/config_private.h"
#include "util/error.h"

// ---- key lookup and suggestions ----

int config_key_find(const char *section, const char *key)
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

// v in the fewest significant digits that read back as v ("0.999999999", not %g's "1").
static void shortest(char *buf, size_t len, double v)
{
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(buf, len, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

void config_describe_range(const struct config_key *k, char *out, size_t outlen)
{
    char lo[32], hi[32];
    switch (k->type) {
    case CT_INT:
    case CT_I64:
        snprintf(out, outlen, "an integer in [%.0f, %.0f]", k->lo, k->hi);
        break;
    case CT_DOUBLE:
        shortest(lo, sizeof(lo), k->lo);
        shortest(hi, sizeof(hi), k->hi);
        snprintf(out, outlen, "a number in %s%s, %s]", k->lo_open ? "(" : "[", lo, hi);
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
int config_key_parse(struct config *c, const struct config_key *k, const char *value, char *err,
                     size_t errlen)
{
    char *field = (char *)c + k->offset;
    char range[160], *end = NULL;
    const char *v = skip_space(value);
    config_describe_range(k, range, sizeof(range));
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
        if (config_key_parse(c, &config_keys[i], config_keys[i].def, err, sizeof(err)) != 0) {
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
    int lineno;     // counted by the line callback below: libinih gives handlers no line numbers
    int err_line;   // line of the first error (libinih goes on parsing after an error)
    int seen[512];  // per config_keys entry: 1 + the line that set it, 0 if none yet
    int seen_ranks; // the same for sweep.ranks_per_run
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
        if (st->seen_ranks) {
            snprintf(st->err, sizeof(st->err),
                     "[sweep] ranks_per_run is set twice (first on line %d)", st->seen_ranks - 1);
            return 0;
        }
        st->seen_ranks = st->lineno + 1;
        sw->ranks_per_run = (int)v;
        return 1;
    }
    const char *dot = strchr(name, '.');
    char section[64] = "";
    if (dot && (size_t)(dot - name) < sizeof(section))
        snprintf(section, sizeof(section), "%.*s", (int)(dot - name), name);
    if (!dot || config_key_find(section, dot + 1) < 0) {
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
    int i = config_key_find(section, name);
    if (i < 0) {
        key_suggest(section, name, suggestion, sizeof(suggestion));
        snprintf(st->err, sizeof(st->err), "unknown key '%s' in section [%s]%s", name, section,
                 suggestion);
        return 0;
    }
    ASSERT(i < (int)(sizeof(st->seen) / sizeof(st->seen[0])));
    if (st->seen[i]) { // a second value would win silently
        snprintf(st->err, sizeof(st->err), "[%s] %s is set twice (first on line %d%s)", section,
                 name, st->seen[i] - 1,
                 st->seen[i] - 1 == st->lineno - 1 && st->lineno > 0
                     ? "; an indented line continues the key above it"
                     : "");
        return 0;
    }
    st->seen[i] = st->lineno + 1;
    if (config_key_parse(st->c, &config_keys[i], value, why, sizeof(why)) != 0) {
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
    int i = config_key_find(section, key);
    if (i < 0) {
        key_suggest(section, key, suggestion, sizeof(suggestion));
        snprintf(err, errlen, "%s%s: unknown key '%s.%s'%s", prefix, assignment, section, key,
                 suggestion);
        return -1;
    }
    if (config_key_parse(c, &config_keys[i], eq + 1, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "%s%s: %s", prefix, assignment, why);
        return -1;
    }
    snprintf(c->origin[i], CONFIG_ORIGIN_MAX, "%s", origin);
    return 0;
}

const char *config_origin(const struct config *c, const char *dotted_key)
{
    const char *dot = strchr(dotted_key, '.');
    char section[64];
    if (!dot || (size_t)(dot - dotted_key) >= sizeof(section))
        return NULL;
    snprintf(section, sizeof(section), "%.*s", (int)(dot - dotted_key), dotted_key);
    int i = config_key_find(section, dot + 1);
    return i < 0 ? NULL : c->origin[i];
}
