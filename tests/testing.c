// Test helpers: closeness, finite differences, fixture reading.
#include "tests/testing.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/rng.h"

double testing_rel_err(const char *what, const float *a, const float *b, size_t n, double floor,
                       double tol)
{
    double maxb = floor, maxd = 0.0;
    size_t worst = 0;
    int saw_nan = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (isnan(d) && !saw_nan) { // a NaN is the worst error and stays so
            saw_nan = 1;
            worst = i;
        }
        if (!saw_nan && d > maxd) {
            maxd = d;
            worst = i;
        }
        if (fabs((double)b[i]) > maxb)
            maxb = fabs((double)b[i]);
    }
    double err = saw_nan ? NAN : maxd / maxb;
    if (!(err <= tol))
        fprintf(stderr, "  %s: rel err %.3e > %.1e (worst at %zu: got %.9g want %.9g)\n", what, err,
                tol, worst, n ? a[worst] : 0.0f, n ? b[worst] : 0.0f);
    return err;
}

void expect_close(const char *what, const float *a, const float *b, size_t n, double tol)
{
    double err = testing_rel_err(what, a, b, n, 1e-30, tol);
    if (!(err <= tol))
        fail_msg("%s differs: rel err %.3e > %.1e", what, err, tol);
}

// Both checks: central differences of `loss` at up to max_checks entries; with max_kinks >= 0,
// samples straddling a switch of a piecewise-smooth loss are told apart (see testing.h).
static double fd_check(const char *what, testing_loss_fn loss, void *ctx, float *x,
                       const float *analytic, size_t n, size_t max_checks, float eps, int max_kinks)
{
    size_t stride = n > max_checks ? n / max_checks : 1, count = 0;
    double *num = calloc(n / stride + 1, sizeof(double)),
           *side = calloc(n / stride + 1, sizeof(double)),
           *far = calloc(n / stride + 1, sizeof(double));
    double maxnum = 1e-3, maxd = 0.0, l0 = max_kinks >= 0 ? loss(ctx) : 0.0;
    int kinks = 0, saw_nan = 0;
    for (size_t i = 0; i < n; i += stride, count++) {
        float saved = x[i];
        x[i] = saved + eps;
        double lp = loss(ctx);
        x[i] = saved - eps;
        double lm = loss(ctx);
        x[i] = saved;
        num[count] = (lp - lm) / (2.0 * (double)eps);
        double dp = (lp - l0) / eps, dm = (l0 - lm) / eps, a = analytic[i];
        int plus_nearer = fabs(dp - a) < fabs(dm - a);
        side[count] = plus_nearer ? dp : dm; // the side nearer the analytic value
        far[count] = plus_nearer ? dm : dp;
        if (getenv("CANARY_FD_VERBOSE"))
            fprintf(stderr, "    [%zu] analytic %.6g numeric %.6g\n", i, analytic[i], num[count]);
        maxnum = fmax(maxnum, fabs(num[count]));
    }
    count = 0;
    for (size_t i = 0; i < n; i += stride, count++) {
        double d = fabs(num[count] - (double)analytic[i]);
        if (isnan(d)) {
            saw_nan = 1;
            continue;
        }
        // a switch: the two one-sided differences disagree (a smooth loss has them equal up to
        // eps·f''), and the nearer one matches; a gradient wrong by a few percent has both
        // sides agree with each other and miss it alike
        if (max_kinks >= 0 && d > 0.02 * maxnum && fabs(side[count] - far[count]) > 0.02 * maxnum &&
            fabs(side[count] - (double)analytic[i]) < 0.02 * maxnum) {
            kinks++; // a routing switch on one side of this sample
            continue;
        }
        maxd = fmax(maxd, d);
    }
    free(num);
    free(side);
    free(far);
    double err = saw_nan || (max_kinks >= 0 && kinks > max_kinks) ? NAN : maxd / maxnum;
    if (max_kinks >= 0)
        fprintf(stderr, "  fd %-28s rel err %.2e (%d samples across a routing switch)\n", what, err,
                kinks);
    else
        fprintf(stderr, "  fd %-28s rel err %.2e\n", what, err);
    return err;
}

double testing_fd_check(const char *what, testing_loss_fn loss, void *ctx, float *x,
                        const float *analytic, size_t n, size_t max_checks, float eps)
{
    return fd_check(what, loss, ctx, x, analytic, n, max_checks, eps, -1);
}

double testing_fd_check_kinks(const char *what, testing_loss_fn loss, void *ctx, float *x,
                              const float *analytic, size_t n, size_t max_checks, float eps,
                              int max_kinks)
{
    return fd_check(what, loss, ctx, x, analytic, n, max_checks, eps, max_kinks);
}

void expect_near_at(double got, double want, double tol, const char *file, int line)
{
    if (!(fabs(got - want) <= tol)) { // NaN and Inf fail
        fprintf(stderr, "  expected %.17g within %.3g of %.17g\n", got, tol, want);
        _fail(file, line);
    }
}

void testing_fill(float *x, size_t n, uint64_t seed, float scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)((2.0 * rng_uniform(seed, 99, i) - 1.0) * scale);
}

static int read_u32(FILE *f, uint32_t *v)
{
    return fread(v, sizeof(*v), 1, f) == 1 ? 0 : -1;
}

int fixture_load(struct fixture *fx, const char *path)
{
    FILE *f = fopen(path, "rb");
    uint32_t magic = 0, version = 0, count = 0;
    memset(fx, 0, sizeof(*fx));
    if (!f) {
        fprintf(stderr, "cannot open fixture '%s'\n", path);
        return -1;
    }
    if (read_u32(f, &magic) || read_u32(f, &version) || read_u32(f, &count) ||
        magic != 0x58464E43u || version != 1 || count > 100000) {
        fprintf(stderr, "fixture '%s': bad header\n", path);
        fclose(f);
        return -1;
    }
    fx->rec = calloc(count, sizeof(*fx->rec));
    fx->n = (int)count;
    for (uint32_t i = 0; i < count; i++) {
        struct fixture_record *r = &fx->rec[i];
        uint32_t len = 0, ndim = 0, dim = 0;
        if (read_u32(f, &len) || len >= sizeof(r->name) || fread(r->name, 1, len, f) != len ||
            read_u32(f, &ndim) || ndim > 4)
            goto bad;
        r->ndim = (int)ndim;
        r->count = 1;
        for (uint32_t d = 0; d < ndim; d++) {
            if (read_u32(f, &dim))
                goto bad;
            r->dims[d] = (int)dim;
            r->count *= dim;
        }
        r->data = malloc(r->count * sizeof(float) + 1);
        if (fread(r->data, sizeof(float), r->count, f) != r->count)
            goto bad;
    }
    fclose(f);
    return 0;
bad:
    fprintf(stderr, "fixture '%s': truncated or corrupt record\n", path);
    fclose(f);
    fixture_free(fx);
    return -1;
}

void fixture_free(struct fixture *fx)
{
    for (int i = 0; i < fx->n; i++)
        free(fx->rec[i].data);
    free(fx->rec);
    memset(fx, 0, sizeof(*fx));
}

const struct fixture_record *fixture_find(const struct fixture *fx, const char *name)
{
    for (int i = 0; i < fx->n; i++)
        if (strcmp(fx->rec[i].name, name) == 0)
            return &fx->rec[i];
    return NULL;
}

int testing_scratch_make(char *dir, size_t len, const char *name)
{
    char cmd[512];
    snprintf(dir, len, "/tmp/canary_test_%s_%ld", name, (long)getpid());
    snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", dir);
    return system(cmd);
}

int testing_scratch_remove(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd);
}

void testing_write_file(const char *path, const void *bytes, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, n, f), n);
    fclose(f);
}
