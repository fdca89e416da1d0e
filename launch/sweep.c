// Sweep grids: expansion, the static plan, the index.
#include "launch/sweep.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "model/model.h"

// Splits "a, b ,c" into items; returns the count or -1 on an empty item.
static int split_values(const char *list, char items[][SWEEP_VALUE_MAX], int max)
{
    int n = 0;
    const char *p = list;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        while (len > 0 && (*p == ' ' || *p == '\t')) {
            p++;
            len--;
        }
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len == 0 || len >= SWEEP_VALUE_MAX || n == max)
            return -1;
        snprintf(items[n], SWEEP_VALUE_MAX, "%.*s", (int)len, p);
        n++;
        if (!comma)
            return n;
        p = comma + 1;
    }
}

// "optim.lr" + "1e-3" → "lr-1e-3"; keeps [A-Za-z0-9.+-_] only.
static void id_part(char *out, size_t outlen, const char *key, const char *value)
{
    const char *dot = strrchr(key, '.');
    size_t o = (size_t)snprintf(out, outlen, "_%s-", dot ? dot + 1 : key);
    for (const char *v = value; *v && o + 1 < outlen; v++) {
        char ch = *v;
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                 ch == '.' || ch == '+' || ch == '-' || ch == '_';
        out[o++] = ok ? ch : '_';
    }
    out[o] = '\0';
}

static double point_cost(const struct config *c)
{
    double step = 3.0 * model_forward_flops(&c->model, c->train.batch_size);
    double evals = c->train.eval_every > 0 ? c->train.steps / c->train.eval_every + 2 : 2;
    double eval = model_forward_flops(&c->model, c->train.batch_size) * c->train.eval_batches;
    return step * c->train.steps + eval * evals;
}

static int sweep_expand_items(const struct config *base, struct sweep_plan *plan,
                              char (*items)[64][SWEEP_VALUE_MAX], int *count, int *idx, char *err,
                              size_t errlen);

int sweep_expand(const struct config *base, struct sweep_plan *plan, char *err, size_t errlen)
{
    char(*items)[64][SWEEP_VALUE_MAX] = calloc(SWEEP_MAX_KEYS, sizeof(*items)); // ~1 MiB
    int count[SWEEP_MAX_KEYS], idx[SWEEP_MAX_KEYS];
    memset(plan, 0, sizeof(*plan));
    if (!items) {
        snprintf(err, errlen, "sweep: out of memory");
        return -1;
    }
    int rc = sweep_expand_items(base, plan, items, count, idx, err, errlen);
    free(items);
    return rc;
}

// The body of sweep_expand, with the value lists' storage given.
static int sweep_expand_items(const struct config *base, struct sweep_plan *plan,
                              char (*items)[64][SWEEP_VALUE_MAX], int *count, int *idx, char *err,
                              size_t errlen)
{
    const struct sweep_config *sw = &base->sweep;
    long total = 1;
    if (sw->nkeys == 0) {
        snprintf(err, errlen,
                 "%s sweeps no key: its [sweep] section is missing or lists none (keys to "
                 "sweep: section.key = v1, v2, ...)",
                 base->source[0] ? base->source : "the config");
        return -1;
    }
    for (int k = 0; k < sw->nkeys; k++) {
        count[k] = split_values(sw->values[k], items[k], 64);
        if (count[k] < 0) {
            snprintf(err, errlen,
                     "%s:%d: [sweep] %s = '%s': empty or too long value in the list (at most 64 "
                     "values of up to %d characters, separated by commas)",
                     base->source, sw->line[k], sw->key[k], sw->values[k], SWEEP_VALUE_MAX - 1);
            return -1;
        }
        total *= count[k];
        if (total > 100000) {
            snprintf(err, errlen, "[sweep] grid of more than 100000 runs");
            return -1;
        }
        idx[k] = 0;
    }
    plan->pts = calloc((size_t)total, sizeof(*plan->pts));
    if (!plan->pts) {
        snprintf(err, errlen, "sweep: out of memory for %ld runs", total);
        return -1;
    }
    plan->n = (int)total;
    for (long i = 0; i < total; i++) {
        struct sweep_point *pt = &plan->pts[i];
        char why[600], assignment[200], part[SWEEP_ID_MAX];
        pt->cfg = *base;
        memset(&pt->cfg.sweep, 0, sizeof(pt->cfg.sweep));
        pt->cfg.sweep.ranks_per_run = sw->ranks_per_run;
        // zero-padded to the grid's size, so ids sort in grid order
        snprintf(pt->id, sizeof(pt->id), "%0*ld", total > 1000 ? (total > 10000 ? 5 : 4) : 3, i);
        for (int k = 0; k < sw->nkeys; k++) {
            const char *v = items[k][idx[k]];
            snprintf(pt->values[k], SWEEP_VALUE_MAX, "%s", v);
            snprintf(assignment, sizeof(assignment), "%s=%s", sw->key[k], v);
            if (config_set_from(&pt->cfg, assignment, "sweep", why, sizeof(why)) != 0) {
                snprintf(err, errlen, "%s:%d: [sweep] %s", base->source, sw->line[k], why);
                sweep_plan_free(plan);
                return -1;
            }
            id_part(part, sizeof(part), sw->key[k], v);
            if (strlen(pt->id) + strlen(part) < sizeof(pt->id))
                strcat(pt->id, part);
        }
        if (config_validate(&pt->cfg, sw->ranks_per_run, 1, why, sizeof(why)) != 0) {
            snprintf(err, errlen, "sweep run %s: %s", pt->id, why);
            sweep_plan_free(plan);
            return -1;
        }
        pt->cost = point_cost(&pt->cfg);
        // odometer: the last key varies fastest
        for (int k = sw->nkeys - 1; k >= 0; k--) {
            if (++idx[k] < count[k])
                break;
            idx[k] = 0;
        }
    }
    return 0;
}

void sweep_plan_free(struct sweep_plan *plan)
{
    free(plan->pts);
    memset(plan, 0, sizeof(*plan));
}

void sweep_assign(struct sweep_plan *plan, int ngroups)
{
    double *load = calloc((size_t)ngroups, sizeof(double));
    int *order = calloc((size_t)plan->n, sizeof(int));
    plan->ngroups = ngroups;
    for (int i = 0; i < plan->n; i++)
        order[i] = i;
    // stable selection by descending cost (grids are small; ties keep grid order)
    for (int i = 0; i < plan->n; i++) {
        int best = i;
        for (int j = i + 1; j < plan->n; j++)
            if (plan->pts[order[j]].cost > plan->pts[order[best]].cost)
                best = j;
        int t = order[best];
        memmove(order + i + 1, order + i, (size_t)(best - i) * sizeof(int));
        order[i] = t;
    }
    for (int i = 0; i < plan->n; i++) {
        int g = 0;
        for (int j = 1; j < ngroups; j++)
            if (load[j] < load[g])
                g = j;
        plan->pts[order[i]].group = g;
        load[g] += plan->pts[order[i]].cost;
    }
    free(load);
    free(order);
}

// ---- index ----

int sweep_index_create(const char *path, const struct config *base, char *err, size_t errlen)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        snprintf(err, errlen, "create sweep index '%s': %s", path, strerror(errno));
        return -1;
    }
    fprintf(f, "id");
    for (int k = 0; k < base->sweep.nkeys; k++)
        fprintf(f, "\t%s", base->sweep.key[k]);
    fprintf(f, "\tstatus\tsteps\tl0\tfinal_eval_loss\n");
    if (fclose(f) != 0) {
        snprintf(err, errlen, "write sweep index '%s': %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

int sweep_index_append(const char *path, const struct config *base, const struct sweep_point *pt,
                       const char *status, long steps, double l0, double final_eval)
{
    char line[4096];
    int o = snprintf(line, sizeof(line), "%s", pt->id);
    for (int k = 0; k < base->sweep.nkeys && o < (int)sizeof(line); k++)
        o += snprintf(line + o, sizeof(line) - (size_t)o, "\t%s", pt->values[k]);
    if (o < (int)sizeof(line))
        o += snprintf(line + o, sizeof(line) - (size_t)o, "\t%s\t%ld\t%.9g\t%.9g\n", status, steps,
                      l0, final_eval);
    if (o >= (int)sizeof(line))
        return -1;
    // One write of a whole line under an exclusive lock: groups append concurrently.
    int fd = open(path, O_WRONLY | O_APPEND);
    if (fd < 0)
        return -1;
    int rc = flock(fd, LOCK_EX);
    ssize_t w = rc == 0 ? write(fd, line, (size_t)o) : -1;
    flock(fd, LOCK_UN);
    close(fd);
    return w == o ? 0 : -1;
}

static int cmp_lines(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int sweep_index_finish(const char *path, char *err, size_t errlen)
{
    // Rewrite with the rows in grid order (ids start with the grid index) through a rename.
    FILE *f = fopen(path, "r");
    char **lines = NULL, buf[4096], tmp[4200];
    int n = 0, cap = 0, rc = -1;
    FILE *out = NULL;
    if (!f) {
        snprintf(err, errlen, "read sweep index '%s': %s", path, strerror(errno));
        return -1;
    }
    while (fgets(buf, sizeof(buf), f)) {
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **grown = realloc(lines, (size_t)cap * sizeof(*lines));
            if (!grown)
                goto out;
            lines = grown;
        }
        lines[n++] = strdup(buf);
    }
    if (n > 1)
        qsort(lines + 1, (size_t)(n - 1), sizeof(*lines), cmp_lines);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    out = fopen(tmp, "w");
    if (!out) {
        snprintf(err, errlen, "write '%s': %s", tmp, strerror(errno));
        goto out;
    }
    for (int i = 0; i < n; i++)
        fputs(lines[i], out);
    if (fclose(out) != 0 || rename(tmp, path) != 0) {
        snprintf(err, errlen, "write sweep index '%s': %s", path, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    fclose(f);
    for (int i = 0; i < n; i++)
        free(lines[i]);
    free(lines);
    return rc;
}
