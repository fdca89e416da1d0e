// OpenBLAS core selection (see blas_core.h for why it re-executes and the environment contract).
// Not for: BLAS calls of the model (model/matmul.c); the self-check's sgemm is the only other.
#include "model/blas_core.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

char *openblas_get_corename(void);
char *openblas_get_config(void);
int openblas_get_parallel(void);

static const struct {
    const char *name;
    int level;
} core_levels[] = {
    {"Katmai", ISA_SSE3},       {"Coppermine", ISA_SSE3},
    {"Northwood", ISA_SSE3},    {"Prescott", ISA_SSE3},
    {"Banias", ISA_SSE3},       {"Atom", ISA_SSE3},
    {"Core2", ISA_SSE3},        {"Penryn", ISA_SSE3},
    {"Dunnington", ISA_SSE3},   {"Nehalem", ISA_SSE3},
    {"Athlon", ISA_SSE3},       {"Opteron", ISA_SSE3},
    {"Opteron_SSE3", ISA_SSE3}, {"Barcelona", ISA_SSE3},
    {"Nano", ISA_SSE3},         {"Bobcat", ISA_SSE3},
    {"Sandybridge", ISA_AVX},   {"Bulldozer", ISA_AVX},
    {"Piledriver", ISA_AVX},    {"Steamroller", ISA_AVX},
    {"Haswell", ISA_AVX2},      {"Excavator", ISA_AVX2},
    {"Zen", ISA_AVX2},          {"SkylakeX", ISA_AVX512},
    {"Cooperlake", ISA_AVX512}, {"SapphireRapids", ISA_AVX512},
};

static const char *isa_names[] = {"an unknown ISA", "SSE3", "AVX", "AVX2+FMA", "AVX-512"};

int blas_core_level(const char *core)
{
    for (size_t i = 0; core && i < sizeof(core_levels) / sizeof(core_levels[0]); i++)
        if (strcasecmp(core, core_levels[i].name) == 0)
            return core_levels[i].level;
    return ISA_UNKNOWN;
}

static int cpu_level_raw(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    // libgcc's feature bits count AVX and AVX-512 only where the OS saves their state (xgetbv)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return ISA_AVX2;
    if (__builtin_cpu_supports("avx"))
        return ISA_AVX;
    return ISA_SSE3;
#else
    return ISA_UNKNOWN;
#endif
}

static const char *const cpu_caps[] = {"", "sse3", "avx", "avx2", "avx512"};

// CANARY_CPU_ISA's level, 0 when unset or empty, -1 when it names no level.
static int cpu_cap(void)
{
    const char *cap = getenv("CANARY_CPU_ISA");
    if (!cap || !*cap)
        return 0;
    for (int l = ISA_SSE3; l <= ISA_AVX512; l++)
        if (strcasecmp(cap, cpu_caps[l]) == 0)
            return l;
    return -1;
}

int blas_cpu_level(void)
{
    int level = cpu_level_raw(), cap = cpu_cap();
    return cap > 0 && cap < level ? cap : level;
}

static int cpu_is_amd(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_is("amd");
#else
    return 0;
#endif
}

const char *blas_core_for_level(int level, int amd)
{
    switch (level) {
    case ISA_AVX512:
        return "SkylakeX";
    case ISA_AVX2:
        return amd ? "Zen" : "Haswell";
    case ISA_AVX:
        return "Sandybridge";
    default:
        return "Prescott";
    }
}

static int is_rejected(const char *rejected, const char *core)
{
    size_t n = strlen(core);
    for (const char *p = rejected; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && strncasecmp(p, core, n) == 0)
            return 1;
        p = end ? end + 1 : p + len;
    }
    return 0;
}

// The best core at or below `level` that the self-check has not rejected, or NULL.
static const char *best_unrejected(int level, int amd, const char *rejected)
{
    for (int l = level; l >= ISA_SSE3; l--) {
        const char *c = blas_core_for_level(l, amd);
        if (!is_rejected(rejected, c))
            return c;
        if (l == ISA_AVX2 && !is_rejected(rejected, amd ? "Haswell" : "Zen"))
            return amd ? "Haswell" : "Zen"; // the other AVX2 kernel set before dropping a level
    }
    return NULL;
}

static void choose(struct blas_choice *out, const char *core)
{
    out->reexec = 1;
    snprintf(out->core, sizeof(out->core), "%s", core);
}

void blas_core_decide(struct blas_choice *out, const char *loaded, const char *user,
                      const char *mine, int cpu_level, int raw_level, int amd, const char *rejected)
{
    int have = blas_core_level(loaded);
    memset(out, 0, sizeof(*out));
    snprintf(out->core, sizeof(out->core), "%s", loaded);
    if (is_rejected(rejected, loaded)) { // the self-check failed on the loaded core
        const char *next =
            best_unrejected(have && have < cpu_level ? have : cpu_level, amd, rejected);
        if (!next) {
            out->fatal = 1;
            snprintf(out->note, sizeof(out->note),
                     "every OpenBLAS core tried (%s) failed canary's sgemm self-check", rejected);
            return;
        }
        choose(out, next);
        snprintf(out->note, sizeof(out->note),
                 "%s failed canary's sgemm self-check (wrong results): falling back to %s", loaded,
                 next);
        return;
    }
    if (have > cpu_level) { // would stop with an illegal instruction at the first sgemm
        const char *next = best_unrejected(cpu_level, amd, rejected);
        if (!next) {
            out->fatal = 1;
            snprintf(out->note, sizeof(out->note), "no OpenBLAS core left to try");
            return;
        }
        choose(out, next);
        int capped = raw_level >= have; // the CPU has it; CANARY_CPU_ISA lowered cpu_level
        snprintf(out->note, sizeof(out->note), "%s%s needs %s, which %s: using %s instead",
                 user ? "OPENBLAS_CORETYPE=" : "", loaded, isa_names[have],
                 capped ? "CANARY_CPU_ISA rules out" : "this CPU does not have", next);
        return;
    }
    if (user) {
        if (strcasecmp(user, loaded) != 0) // OpenBLAS ignores a name it does not know
            snprintf(out->note, sizeof(out->note),
                     "OPENBLAS_CORETYPE=%s is not a core this OpenBLAS has: it loaded %s", user,
                     loaded);
        else
            snprintf(out->note, sizeof(out->note), "forced by OPENBLAS_CORETYPE=%s", user);
        return;
    }
    if (mine) {
        const char *why = getenv("CANARY_BLAS_NOTE");
        if (strcasecmp(mine, loaded) != 0)
            snprintf(out->note, sizeof(out->note),
                     "canary asked for %s but OpenBLAS loaded %s (this build lacks it)", mine,
                     loaded);
        else
            snprintf(out->note, sizeof(out->note), "%s", why && *why ? why : "chosen by canary");
        return;
    }
    if (have != ISA_UNKNOWN && have < cpu_level) {
        const char *next = best_unrejected(cpu_level, amd, rejected);
        if (next && blas_core_level(next) > have) {
            choose(out, next);
            snprintf(out->note, sizeof(out->note),
                     "OpenBLAS chose %s (%s kernels; it does not recognise this CPU), which has "
                     "%s: selected %s",
                     loaded, isa_names[have], isa_names[cpu_level], next);
            return;
        }
    }
    snprintf(out->note, sizeof(out->note), "OpenBLAS's own choice for this CPU (%s)",
             have == ISA_UNKNOWN ? "a core canary does not know" : isa_names[cpu_level]);
}

// C = alpha·op(A)·op(B) + beta·C row-major, in double, for the self-check.
static void gemm_ref(int ta, int tb, int m, int n, int k, double alpha, const float *a,
                     const float *b, double beta, const float *c0, double *c, double *mag)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0.0, s_abs = 0.0;
            for (int l = 0; l < k; l++) {
                double x = ta ? a[(size_t)l * m + i] : a[(size_t)i * k + l];
                double y = tb ? b[(size_t)j * k + l] : b[(size_t)l * n + j];
                s += x * y;
                s_abs += fabs(x * y);
            }
            double prior = c0[(size_t)i * n + j];
            c[(size_t)i * n + j] = alpha * s + beta * prior;
            mag[(size_t)i * n + j] = fabs(alpha) * s_abs + fabs(beta * prior) + 1e-30;
        }
}

static void cblas_gemm(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                       const float *b, int ldb, float beta, float *c, int ldc)
{
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
                k, alpha, a, lda, b, ldb, beta, c, ldc);
}

double blas_selfcheck(void)
{
    return blas_selfcheck_of(cblas_gemm);
}

double blas_selfcheck_of(blas_sgemm_fn gemm)
{
    // odd sizes (edge tiles in every direction), one below and one above OpenBLAS's small-matrix
    // path, every transpose pair, alpha ≠ 1 and beta ≠ 0
    static const int sizes[2][3] = {{7, 5, 9}, {67, 45, 131}};
    double worst = 0.0;
    size_t most = 67 * 131 + 131 * 45 + 67 * 45;
    float *buf = malloc(most * sizeof(float) * 2);
    double *ref = malloc(67 * 45 * sizeof(double) * 2);
    if (!buf || !ref) {
        free(buf);
        free(ref);
        return INFINITY;
    }
    for (int s = 0; s < 2; s++) {
        int m = sizes[s][0], n = sizes[s][1], k = sizes[s][2];
        float *a = buf, *b = a + (size_t)m * k, *c = b + (size_t)k * n, *c0 = c + (size_t)m * n;
        double *mag = ref + (size_t)m * n;
        for (int i = 0; i < m * k; i++)
            a[i] = (float)((i * 37 % 101) - 50) / 64.0f;
        for (int i = 0; i < k * n; i++)
            b[i] = (float)((i * 53 % 89) - 44) / 32.0f;
        for (int t = 0; t < 4; t++) {
            int ta = t & 1, tb = t >> 1;
            for (int i = 0; i < m * n; i++)
                c[i] = c0[i] = (float)((i * 29 % 31) - 15) / 8.0f;
            gemm(ta, tb, m, n, k, 0.75f, a, ta ? m : k, b, tb ? k : n, 0.5f, c, n);
            gemm_ref(ta, tb, m, n, k, 0.75, a, b, 0.5, c0, ref, mag);
            for (int i = 0; i < m * n; i++) {
                double e = fabs((double)c[i] - ref[i]) / mag[i];
                worst = e > worst || e != e ? e : worst;
            }
        }
    }
    free(buf);
    free(ref);
    return worst;
}

// This process's rank when started by a launcher (MPI is not initialised yet): only rank 0 speaks.
static int launcher_rank(void)
{
    static const char *vars[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
        const char *v = getenv(vars[i]);
        if (v && *v)
            return atoi(v);
    }
    return 0;
}

static void reexec(char **argv, const struct blas_choice *ch, const char *rejected)
{
    char count[16];
    const char *prev = getenv("CANARY_BLAS_EXECS");
    int n = prev ? atoi(prev) : 0;
    if (n >= 4) { // a loop would be a bug in blas_core_decide; never spin
        fprintf(stderr, "canary: BLAS core selection did not settle; staying on %s\n",
                openblas_get_corename());
        return;
    }
    snprintf(count, sizeof(count), "%d", n + 1);
    setenv("CANARY_BLAS_EXECS", count, 1);
    setenv("OPENBLAS_CORETYPE", ch->core, 1);
    setenv("CANARY_BLAS_CORE", ch->core, 1);
    setenv("CANARY_BLAS_NOTE", ch->note, 1);
    setenv("CANARY_BLAS_REJECTED", rejected, 1);
    unsetenv("CANARY_BLAS_AS_DETECTED");
    execv("/proc/self/exe", argv);
    fprintf(stderr, "canary: could not re-execute to select the %s BLAS core; staying on %s\n",
            ch->core, openblas_get_corename());
}

void blas_core_select(char **argv)
{
    const char *loaded = openblas_get_corename();
    const char *env = getenv("OPENBLAS_CORETYPE");
    const char *mine = getenv("CANARY_BLAS_CORE");
    const char *rej_env = getenv("CANARY_BLAS_REJECTED");
    char rejected[256];
    snprintf(rejected, sizeof(rejected), "%s", rej_env ? rej_env : "");
    // OPENBLAS_CORETYPE is the user's when canary did not put it there
    const char *user = env && *env && !(mine && strcasecmp(mine, env) == 0) ? env : NULL;
    if (user && getenv("CANARY_BLAS_AS_DETECTED"))
        user = NULL;
    if (cpu_cap() < 0) { // the mixed-cluster safeguard must not be off without a word
        if (launcher_rank() == 0)
            fprintf(stderr, "canary: CANARY_CPU_ISA=%s is not one of sse3, avx, avx2, avx512\n",
                    getenv("CANARY_CPU_ISA"));
        exit(1);
    }
    int cpu = blas_cpu_level(), amd = cpu_is_amd();
    if (user)
        mine = NULL; // the user's core, not one canary chose
    struct blas_choice ch;
    blas_core_decide(&ch, loaded, user, mine, cpu, cpu_level_raw(), amd, rejected);
    if (!ch.reexec && !ch.fatal) {
        double err = blas_selfcheck();
        if (!(err <= 1e-5)) {
            size_t len = strlen(rejected);
            snprintf(rejected + len, sizeof(rejected) - len, "%s%s", len ? "," : "", loaded);
            blas_core_decide(&ch, loaded, user, mine, cpu, cpu_level_raw(), amd, rejected);
            fprintf(stderr, "canary: OpenBLAS core %s: sgemm self-check error %.2g\n", loaded, err);
        }
    }
    if (ch.fatal) {
        fprintf(stderr, "canary: %s; cannot compute safely\n", ch.note);
        exit(1);
    }
    if (ch.reexec) {
        if (launcher_rank() == 0)
            fprintf(stderr, "canary: BLAS: %s\n", ch.note);
        reexec(argv, &ch, rejected);
        if (blas_core_level(loaded) > cpu) {
            fprintf(stderr, "canary: OpenBLAS core %s cannot run on this CPU\n", loaded);
            exit(1);
        }
        snprintf(ch.note, sizeof(ch.note), "kept %s (re-execution failed)", loaded);
    }
    setenv("CANARY_BLAS_NOTE", ch.note, 1);
    if (openblas_get_parallel() == 1 && launcher_rank() == 0)
        fprintf(stderr, "canary: this OpenBLAS is the pthread build: its own threads would race "
                        "canary's OpenMP threads, so it runs single-threaded and canary splits "
                        "large products over its threads (install libopenblas0-openmp for "
                        "full speed)\n");
}

const char *blas_core_name(void)
{
    return openblas_get_corename();
}

void blas_core_describe(char *buf, size_t len)
{
    static const char *builds[] = {"sequential", "pthread", "OpenMP"};
    int par = openblas_get_parallel();
    const char *cfg = openblas_get_config(), *note = getenv("CANARY_BLAS_NOTE");
    char version[32] = "OpenBLAS";
    if (cfg && strncmp(cfg, "OpenBLAS ", 9) == 0)
        snprintf(version, sizeof(version), "%.*s", (int)strcspn(cfg + 9, " ") + 9, cfg);
    snprintf(buf, len, "%s core %s (%s build): %s", version, openblas_get_corename(),
             par >= 0 && par <= 2 ? builds[par] : "unknown", note ? note : "not selected");
}
