// Fuzzes the checkpoint reader (ckpt_read) against the tiny model of tests/fuzz/checkpoint.ini,
// in two modes chosen by the first byte of the input:
//
//   'c' (a seal's magic starts so): the input is the checkpoint file, read as a user's file is.
//       A mutated file must be refused by the seal before HDF5 sees it. With CANARY_FUZZ_HDF5=1
//       in the environment, inputs with bit 0 of byte 32 set (in the seal's zero padding) are
//       resealed first, so mutations reach HDF5's own parser: that explores HDF5 1.10's handling
//       of hostile files, which has known hangs (see docs/hardening.md), not canary's code.
//   otherwise: the input is a script for a checkpoint writer that builds a well-formed, sealed
//       HDF5 file whose content is fuzzed: each dataset present, missing, or of a wrong shape;
//       the config text kept, replaced by fuzzed text or missing; the state attributes fuzzed.
//       This reaches every check canary makes behind the seal.
//
// Either way ckpt_read must return 0, or -1 / -2 with a message — never crash, hang or leak.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "launch/checkpoint.h"
#include "launch/config.h"
#include "launch/train.h"
#include "probes/h5.h"
#include "tests/fuzz/fuzz.h"

static struct dist_ctx dist;
static struct run run;
static char *config_text; // the run's own config, as a valid checkpoint stores it
static float *pristine;   // the initial weights: ckpt_read overwrites run.params as it reads
static int reseal;        // CANARY_FUZZ_HDF5=1
static int verbose;       // CANARY_FUZZ_VERBOSE=1: print each outcome (corpus triage)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct config c;
    char err[1024] = "";
    size_t len = 0;
    config_defaults(&c);
    if (dist_init(&dist, argc, argv) != 0 ||
        config_load_file(&c, CANARY_SOURCE_DIR "/tests/fuzz/checkpoint.ini", err, sizeof(err)) ||
        config_validate(&c, 1, 0, err, sizeof(err)) ||
        run_init(&run, &c, &dist, 1, err, sizeof(err))) {
        fprintf(stderr, "fuzz_checkpoint: setup failed: %s\n", err);
        exit(1);
    }
    pristine = malloc(run.model.table.total * sizeof(float));
    memcpy(pristine, run.params, run.model.table.total * sizeof(float));
    FILE *f = open_memstream(&config_text, &len);
    config_write(&run.cfg, f);
    fclose(f);
    const char *env = getenv("CANARY_FUZZ_HDF5");
    reseal = env && strcmp(env, "1") == 0;
    verbose = getenv("CANARY_FUZZ_VERBOSE") != NULL;
    return 0;
}

// The script: bytes taken in order; past the end every byte reads as 0 (= "as a valid file").
struct script {
    const uint8_t *p;
    size_t n, at;
};

static unsigned take(struct script *s)
{
    return s->at < s->n ? s->p[s->at++] : 0;
}

static int write_tensor(struct h5file *f, struct script *s, const char *path,
                        const struct tensor *t, const float *values, char *err, size_t errlen)
{
    size_t dims[2] = {(size_t)t->rows, (size_t)t->cols};
    unsigned op = take(s) % 5;
    if (op == 1)
        return 0; // missing
    if (op == 2)
        dims[0] += 1; // one row too many (the data buffer is big enough: see scratch below)
    if (op == 3) {    // flattened to 1-D
        dims[0] = (size_t)t->size;
        return h5_write_f32(f, path, 1, dims, values, err, errlen);
    }
    if (op == 4 && dims[1] > 1)
        dims[1] -= 1; // fewer values than the tensor holds
    if (t->rows == 1 && op != 2)
        return h5_write_f32(f, path, 1, dims + 1, values, err, errlen);
    return h5_write_f32(f, path, 2, dims, values, err, errlen);
}

static void build(struct script *s, const char *path)
{
    const struct tensor_table *tt = &run.model.table;
    struct h5file *f = NULL;
    char err[1024], name[TENSOR_NAME_MAX + 32];
    // Values: a valid checkpoint's (weights, and their magnitudes as second moments), with a few
    // replaced by script bytes (NaN, Inf and negative moments included). Room for one extra row
    // of the widest tensor.
    size_t room = tt->total + 4096;
    float *scratch = calloc(room, sizeof(float)), *second = calloc(room, sizeof(float));
    for (size_t i = 0; i < tt->total; i++) {
        scratch[i] = pristine[i];
        second[i] = fabsf(pristine[i]);
    }
    for (int i = 0; i < 16; i++) {
        uint32_t bits = take(s) | take(s) << 8 | take(s) << 16 | (uint32_t)take(s) << 24;
        memcpy(&scratch[i * 37 % tt->total], &bits, 4);
        memcpy(&second[i * 41 % tt->total], &bits, 4);
    }
    if (h5_open(&f, path, H5_MEMORY, err, sizeof(err)) != 0)
        abort();
    for (int i = 0; i < tt->n; i++) {
        const struct tensor *t = &tt->t[i];
        snprintf(name, sizeof(name), "/params/%s", t->name);
        write_tensor(f, s, name, t, scratch + t->offset, err, sizeof(err));
        snprintf(name, sizeof(name), "/optim/%s/m", t->name);
        write_tensor(f, s, name, t, scratch + t->offset, err, sizeof(err));
        snprintf(name, sizeof(name), "/optim/%s/v", t->name);
        write_tensor(f, s, name, t, second + t->offset, err, sizeof(err));
    }
    unsigned op = take(s) % 4;
    if (op == 0) {
        h5_attr_str(f, "/config", "ini", config_text, err, sizeof(err));
    } else if (op == 1 || op == 2) { // fuzzed text: the rest of the script (after a valid one)
        size_t rest = s->at < s->n ? s->n - s->at : 0, base = op == 2 ? strlen(config_text) : 0;
        char *text = malloc(base + rest + 1);
        memcpy(text, config_text, base);
        memcpy(text + base, s->p + s->at, rest);
        text[base + rest] = '\0';
        s->at = s->n;
        h5_attr_str(f, "/config", "ini", text, err, sizeof(err));
        free(text);
    }
    for (int k = 0; k < 2; k++) {
        uint64_t bits = 0;
        int64_t v;
        for (int b = 0; b < 8; b++)
            bits |= (uint64_t)take(s) << (8 * b);
        memcpy(&v, &bits, 8);
        if (take(s) % 8 != 7) // present, unless the script says otherwise
            h5_attr_i64(f, "/state", k == 0 ? "step" : "adam_t", v, err, sizeof(err));
    }
    if (run.model.moe_layers > 0) { // the dead-expert ages: valid, missing, misshapen or fuzzed
        size_t dims[2] = {(size_t)run.model.moe_layers, (size_t)run.cfg.model.experts};
        size_t n = dims[0] * dims[1];
        float *age = calloc(n + 1, sizeof(float));
        unsigned age_op = take(s) % 4;
        for (size_t i = 0; i < n; i++) {
            uint32_t bits = take(s) | take(s) << 8 | take(s) << 16 | (uint32_t)take(s) << 24;
            age[i] = (float)(bits % 5);
            if (age_op == 3)
                memcpy(&age[i], &bits, 4);
        }
        if (age_op == 2)
            dims[1] += 1;
        if (age_op != 1)
            h5_write_f32(f, "/state/moe_expert_age", 2, dims, age, err, sizeof(err));
        free(age);
    }
    if (h5_write_image(f, path, err, sizeof(err)) != 0)
        abort();
    h5_close(f);
    free(scratch);
    free(second);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[2048];
    const char *path;
    if (size > 0 && data[0] == 'c') {
        if (reseal && size > H5_SEAL_BYTES && (data[32] & 1)) {
            uint8_t *copy = malloc(size);
            memcpy(copy, data, size);
            h5_seal_image(copy, size);
            path = fuzz_file("ckpt", copy, size);
            free(copy);
        } else {
            path = fuzz_file("ckpt", data, size);
        }
    } else {
        struct script s = {data, size, size > 0}; // the mode byte is not part of the script
        path = fuzz_file("ckpt", NULL, 0);
        build(&s, path);
    }
    err[0] = '\0';
    int rc = ckpt_read(&run, path, err, sizeof(err));
    if (verbose)
        fprintf(stderr, "fuzz_checkpoint: %d %s\n", rc, err);
    if (rc != 0 && (err[0] == '\0' || (rc != -1 && rc != -2)))
        abort(); // a refusal is -1 or -2 and says why
    return 0;
}
