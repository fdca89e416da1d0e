// provides: helpers shared by the cmocka tests — closeness checks that report the worst element,
//           finite-difference gradient checks, and the reference-fixture reader.
// Tests include <cmocka.h> after the standard headers it needs; this header does that.
#ifndef CANARY_TESTS_TESTING_H
#define CANARY_TESTS_TESTING_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

// Normalised error max|a − b| / max(max|b|, floor). Prints what, the error and the worst index
// when it exceeds tol, and returns the error.
double testing_rel_err(const char *what, const float *a, const float *b, size_t n, double floor,
                       double tol);
// Fails the test when testing_rel_err exceeds tol.
void expect_close(const char *what, const float *a, const float *b, size_t n, double tol);

// Fails unless |got − want| ≤ tol, in double (cmocka 1.1.5's assert_float_equal casts to float
// and lets NaN pass).
void expect_near_at(double got, double want, double tol, const char *file, int line);
#define expect_near(got, want, tol) expect_near_at((got), (want), (tol), __FILE__, __LINE__)

// Loss of the current state; the check perturbs x in place and calls it.
typedef double (*testing_loss_fn)(void *ctx);

// Central finite differences of loss w.r.t. up to max_checks entries of x (spread evenly) against
// analytic[]; returns max|analytic − numeric| / max(max|numeric|, 1e-3) over the checked entries.
double testing_fd_check(const char *what, testing_loss_fn loss, void *ctx, float *x,
                        const float *analytic, size_t n, size_t max_checks, float eps);
// The same for a loss that is piecewise smooth (MoE routing: a perturbation can move a token to
// another expert). A sample whose central difference misses the analytic gradient, whose two
// one-sided differences disagree (by over 2% of the largest numeric gradient) and one of which
// matches it (within 2%) straddles a routing switch and is skipped; more than max_kinks skipped
// samples return NAN. A wrong gradient has both sides agree and miss it, so it still fails.
double testing_fd_check_kinks(const char *what, testing_loss_fn loss, void *ctx, float *x,
                              const float *analytic, size_t n, size_t max_checks, float eps,
                              int max_kinks);

// Fills x[n] with deterministic values in [-scale, scale].
void testing_fill(float *x, size_t n, uint64_t seed, float scale);

// A scratch directory /tmp/canary_test_NAME_PID into dir (created; 0 on success), and its
// removal with everything in it: a test group's setup and teardown.
int testing_scratch_make(char *dir, size_t len, const char *name);
int testing_scratch_remove(const char *dir);
// Writes bytes[n] to path (the test fails if it cannot).
void testing_write_file(const char *path, const void *bytes, size_t n);

// ---- reference fixtures (tests/fixtures/<case>/fixture.bin, see its README.md) ----
struct fixture_record {
    char name[128];
    int ndim;
    int dims[4];
    size_t count;
    float *data;
};

struct fixture {
    struct fixture_record *rec;
    int n;
};

// Returns 0 or -1 (message printed).
int fixture_load(struct fixture *f, const char *path);
void fixture_free(struct fixture *f);
// The record called name, or NULL.
const struct fixture_record *fixture_find(const struct fixture *f, const char *name);

#endif
