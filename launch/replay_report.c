// What `canary replay` prints and writes (rank 0): the rerun directories, the table of batch S's
// sequences, the branch table and the summary (replay.h).
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "data/tokenizer.h"
#include "launch/replay.h"
#include "launch/rundir.h"
#include "util/error.h"

void replay_say(FILE *log, int rank0, const char *fmt, ...)
{
    va_list ap;
    if (!rank0)
        return;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
    if (log) {
        va_start(ap, fmt);
        vfprintf(log, fmt, ap);
        va_end(ap);
        fputc('\n', log);
        fflush(log);
    }
}

int replay_open_dir(const char *dir, const struct config *c, struct replay_out *o, int with_log,
                    char *err, size_t errlen)
{
    char path[CONFIG_PATH_MAX + 32];
    if (rundir_create(dir, err, errlen) != 0 || rundir_write_config(dir, c, err, errlen) != 0)
        return -1;
    snprintf(path, sizeof(path), "%s/metrics.tsv", dir);
    if (!(o->metrics = fopen(path, "w"))) {
        snprintf(err, errlen, "replay: write '%s': %s", path, strerror(errno));
        return -1;
    }
    fputs(TRAIN_METRICS_HEADER, o->metrics);
    snprintf(path, sizeof(path), "%s/log.txt", dir);
    if (with_log && !(o->log = fopen(path, "w"))) {
        snprintf(err, errlen, "replay: write '%s': %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

int replay_close_out(struct replay_out *o)
{
    int bad = 0;
    if (o->metrics)
        bad |= ferror(o->metrics) | (fclose(o->metrics) != 0);
    if (o->log)
        bad |= ferror(o->log) | (fclose(o->log) != 0);
    o->metrics = o->log = NULL;
    return bad ? -1 : 0;
}

// Appends text[len] to out as one TSV cell: tab, newline, CR and backslash escaped, other
// control bytes as \xNN; bytes >= 0x80 too when the text is bytes (byte-level), kept when it is
// decoded UTF-8 (BPE). At most outlen - 1 characters.
static void cell(const char *text, size_t len, int utf8, char *out, size_t outlen)
{
    size_t k = 0;
    out[0] = '\0';
    for (size_t i = 0; i < len && k + 6 < outlen; i++) {
        unsigned char ch = (unsigned char)text[i];
        if (ch == '\n')
            k += (size_t)snprintf(out + k, outlen - k, "\\n");
        else if (ch == '\t')
            k += (size_t)snprintf(out + k, outlen - k, "\\t");
        else if (ch == '\\')
            k += (size_t)snprintf(out + k, outlen - k, "\\\\");
        else if ((ch >= 0x20 && ch < 0x7f) || (utf8 && ch >= 0x80))
            out[k++] = (char)ch, out[k] = '\0';
        else
            k += (size_t)snprintf(out + k, outlen - k, "\\x%02x", ch);
    }
}

// A sequence as text through the training file's tokenizer, or as its ids when there is none.
static void decode(const struct tokenizer *t, const int *tok, int n, char *out, size_t outlen)
{
    uint16_t *ids = xcalloc((size_t)n, sizeof(*ids));
    char *text = NULL, err[256];
    size_t len = 0, k = 0;
    for (int i = 0; i < n; i++)
        ids[i] = (uint16_t)tok[i];
    if (t && tokenizer_decode(t, ids, (size_t)n, &text, &len, err, sizeof(err)) == 0) {
        cell(text, len, t->bpe != NULL, out, outlen);
    } else {
        out[0] = '\0';
        for (int i = 0; i < n && k + 12 < outlen; i++)
            k += (size_t)snprintf(out + k, outlen - k, "%s%d", i ? " " : "", tok[i]);
    }
    free(text);
    free(ids);
}

struct ranked {
    double loss;
    int seq;
};

static int by_loss_desc(const void *pa, const void *pb)
{
    const struct ranked *a = pa, *b = pb;
    int an = isnan(a->loss), bn = isnan(b->loss);
    if (an != bn) // a non-finite loss first: it is the worst
        return an ? -1 : 1;
    if (!an && a->loss != b->loss)
        return a->loss < b->loss ? 1 : -1;
    return a->seq - b->seq;
}

int replay_report_batch(const char *dir, FILE *log, const struct config *c,
                        const struct token_file *tf, long S, const double *loss, const int *tokens,
                        int worst, char *err, size_t errlen)
{
    struct tokenizer tok;
    char why[1024];
    int have_tok = tokenizer_for_file(&tok, tf, c->data.train, NULL, why, sizeof(why)) == 0;
    if (!have_tok)
        replay_say(log, 1, "batch.tsv gives token ids, not text: %s", why);
    int B = c->train.batch_size, T = c->model.seq_len;
    struct ranked *rk = xcalloc((size_t)B, sizeof(*rk));
    double mean = 0.0;
    for (int j = 0; j < B; j++) {
        rk[j].loss = loss[j];
        rk[j].seq = j;
        mean += loss[j] / B;
    }
    qsort(rk, (size_t)B, sizeof(*rk), by_loss_desc);
    // a token is at most 16 bytes of text here, each escaped to at most 4 characters
    size_t textlen = (size_t)(T + 1) * 64 + 1;
    char *text = xcalloc(textlen, 1);
    FILE *f = replay_fopen(dir, "batch.tsv", err, errlen);
    if (!f) {
        free(text);
        free(rk);
        tokenizer_free(&tok);
        return -1;
    }
    fprintf(f, "rank\tsequence\tsample\tloss\tloss_minus_mean\ttext\n");
    replay_say(log, 1, "batch of step %ld: %d sequences, mean loss %.4f; the %d worst:", S, B, mean,
               worst < B ? worst : B);
    replay_say(log, 1, "  %4s  %8s  %12s  %8s  %8s  %s", "rank", "sequence", "sample", "loss",
               "- mean", "text (first 60 characters)");
    for (int i = 0; i < B; i++) {
        int j = rk[i].seq;
        uint64_t sample = (uint64_t)(S - 1) * (uint64_t)B + (uint64_t)j;
        decode(have_tok ? &tok : NULL, tokens + (size_t)j * (T + 1), T + 1, text, textlen);
        fprintf(f, "%d\t%d\t%llu\t%.9g\t%.9g\t%s\n", i + 1, j, (unsigned long long)sample,
                rk[i].loss, rk[i].loss - mean, text);
        if (i < worst)
            replay_say(log, 1, "  %4d  %8d  %12llu  %8.4f  %+8.4f  %.60s", i + 1, j,
                       (unsigned long long)sample, rk[i].loss, rk[i].loss - mean, text);
    }
    free(text);
    free(rk);
    tokenizer_free(&tok);
    return replay_fclose(f, dir, "batch.tsv", err, errlen);
}

int replay_report_branches(const char *dir, FILE *log, long S, long end, double pre_mean,
                           double pre_sd, const struct replay_branch_result *res, int n, char *err,
                           size_t errlen)
{
    FILE *f = replay_fopen(dir, "branches.tsv", err, errlen);
    if (!f)
        return -1;
    fprintf(f, "branch\tran\tloss_at_S\tloss_at_end\tmax_loss\trecovered\tgrad_norm_at_S\twhat\t"
               "note\n");
    replay_say(log, 1,
               "branches from the state before step %ld, to step %ld (recovered: loss at %ld "
               "<= %.4f, the pre-spike mean %.4f + 1 sigma %.4f):",
               S, end, end, pre_mean + pre_sd, pre_mean, pre_sd);
    replay_say(log, 1, "  %-11s  %10s  %10s  %10s  %-9s  %10s  %s", "branch", "loss at S", "at end",
               "max", "recovered", "gnorm at S", "what");
    for (int i = 0; i < n; i++) {
        const struct replay_branch_result *b = &res[i];
        fprintf(f, "%s\t%d\t%.9g\t%.9g\t%.9g\t%d\t%.9g\t%s\t%s\n", b->name, b->ran, b->loss_S,
                b->loss_end, b->loss_max, b->recovered, b->gnorm_S, b->what, b->note);
        if (!b->ran) {
            replay_say(log, 1, "  %-11s  %10s  %10s  %10s  %-9s  %10s  %s (%s)", b->name, "-", "-",
                       "-", "-", "-", b->what, b->note);
            continue;
        }
        replay_say(log, 1, "  %-11s  %10.4f  %10.4f  %10.4f  %-9s  %10.4g  %s%s%s%s", b->name,
                   b->loss_S, b->loss_end, b->loss_max, b->recovered ? "yes" : "no", b->gnorm_S,
                   b->what, b->note[0] ? " (" : "", b->note, b->note[0] ? ")" : "");
    }
    return replay_fclose(f, dir, "branches.tsv", err, errlen);
}

void replay_branch_summarise(struct replay_branch_result *b, const struct replay_trace *t,
                             double pre_mean, double pre_sd)
{
    b->loss_S = t->n > 0 ? t->loss[0] : NAN;
    b->gnorm_S = t->n > 0 ? t->grad_norm[0] : NAN;
    b->loss_end = t->n > 0 ? t->loss[t->n - 1] : NAN;
    b->loss_max = NAN; // over the finite losses (a diverged branch says so in its note)
    for (long i = 0; i < t->n; i++)
        if (isfinite(t->loss[i]) && !(t->loss[i] <= b->loss_max))
            b->loss_max = t->loss[i];
    b->recovered = b->loss_end <= pre_mean + pre_sd;
}

FILE *replay_fopen(const char *dir, const char *name, char *err, size_t errlen)
{
    char path[CONFIG_PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/%s.tmp", dir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        snprintf(err, errlen, "replay: write '%s': %s", path, strerror(errno));
    return f;
}

int replay_fclose(FILE *f, const char *dir, const char *name, char *err, size_t errlen)
{
    char tmp[CONFIG_PATH_MAX + 32], path[CONFIG_PATH_MAX + 32];
    snprintf(tmp, sizeof(tmp), "%s/%s.tmp", dir, name);
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int bad = ferror(f) | (fclose(f) != 0);
    if (bad || rename(tmp, path) != 0) {
        snprintf(err, errlen, "replay: write '%s' failed", path);
        remove(tmp);
        return -1;
    }
    return 0;
}
