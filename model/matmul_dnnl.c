// The oneDNN backend of the linear layers' products (model/matmul_dnnl.h).
#include "model/matmul_dnnl.h"

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/matmul.h"
#include "util/bf16.h"
#include "util/error.h"

// The products of a linear layer with weight w[out, in] and n rows (model/matmul.h), as oneDNN
// sees them (src [M, K] · weights [K, N] -> dst [M, N]; ab: row-major, ba: its transpose):
//
//   product                          src                   weights               dst
//   OP_FWD(_ACC) out (+)= in · wᵀ    in [n, in] ab         w as [in, out] ba     [n, out] ab
//   OP_DIN       din = dout · w      dout [n, out] ab      w [out, in] ab        [n, in] ab
//   OP_DW        dw += doutᵀ · in    dout as [out, n] ba   in [n, in] ab         [out, in] ab
enum mm_op { OP_FWD, OP_FWD_ACC, OP_DIN, OP_DW };

enum { MAX_PRIMS = 512 };

struct prim {
    enum mm_op op;
    int rows; // > 0: exact rows; 0: oneDNN's runtime dimension
    int in_dim, out_dim;
    dnnl_primitive_t p;
    dnnl_memory_t src, wei, dst; // exact rows only: made once, pointed at the data per call
};

struct mm_dnnl {
    dnnl_engine_t eng;
    dnnl_stream_t stream;
    int bf16;
    int rows; // the exact tier's rows
    struct prim *prims;
    int n, late, planning;
    uint16_t *a, *b, *c; // bf16 operands: [cap_act], [cap_w], [cap_act]
    size_t cap_act, cap_w;
    char impl[2][256]; // implementations of the exact-rows [0] and runtime-rows [1] primitives
};

#define DNNL_CHECK(call)                                                                           \
    do {                                                                                           \
        dnnl_status_t st_ = (call);                                                                \
        if (st_ != dnnl_success)                                                                   \
            FATAL("oneDNN: %s failed: %s", #call, dnnl_status2str(st_));                           \
    } while (0)

// The three memory descriptors of a product with `rows` rows (DNNL_RUNTIME_DIM_VAL for runtime).
static void product_mds(int op, int64_t rows, int in_dim, int out_dim, dnnl_data_type_t dt,
                        dnnl_memory_desc_t *src, dnnl_memory_desc_t *wei, dnnl_memory_desc_t *dst)
{
    int64_t I = in_dim, O = out_dim;
    if (op == OP_FWD || op == OP_FWD_ACC) {
        dnnl_dims_t s = {rows, I}, w = {I, O}, d = {rows, O};
        DNNL_CHECK(dnnl_memory_desc_init_by_tag(src, 2, s, dt, dnnl_ab));
        DNNL_CHECK(dnnl_memory_desc_init_by_tag(wei, 2, w, dt, dnnl_ba));
        DNNL_CHECK(dnnl_memory_desc_init_by_tag(dst, 2, d, dnnl_f32, dnnl_ab));
    } else if (op == OP_DIN) {
        dnnl_dims_t s = {rows, O}, w = {O, I}, d = {rows, I};
        DNNL_CHECK(dnnl_memory_desc_init_by_tag(src, 2, s, dt, dnnl_ab));
        DNNL_CHECK(dnnl_memory_desc_init_by_tag(wei, 2, w, dt, dnnl_ab));
        DNNL_CHECK(dnnl_memory_desc_init_by_tag(dst, 2, d, dnnl_f32, dnnl_ab));
    } else {
        dnnl_dims_t s = {O, rows}, w = {rows, I}, d = {O, I};
        DNNL_CHECK(dnnl_memory_desc_init_by_tag(src, 2, s, dt, dnnl_ba));
        DNNL_CHECK(dnnl_memory_desc_init_by_tag(wei, 2, w, dt, dnnl_ab));
        DNNL_CHECK(dnnl_memory_desc_init_by_tag(dst, 2, d, dnnl_f32, dnnl_ab));
    }
}

// A primitive descriptor for the product, or NULL with the status when oneDNN has none.
static dnnl_primitive_desc_t product_pd(dnnl_engine_t eng, int op, int64_t rows, int in_dim,
                                        int out_dim, dnnl_data_type_t dt, dnnl_status_t *status)
{
    dnnl_memory_desc_t src, wei, dst;
    product_mds(op, rows, in_dim, out_dim, dt, &src, &wei, &dst);
    dnnl_matmul_desc_t desc;
    DNNL_CHECK(dnnl_matmul_desc_init(&desc, &src, &wei, NULL, &dst));
    dnnl_primitive_attr_t attr;
    DNNL_CHECK(dnnl_primitive_attr_create(&attr));
    if (op == OP_FWD_ACC || op == OP_DW) { // C += A·B: the sum post-op reads dst before writing
        dnnl_post_ops_t po;
        DNNL_CHECK(dnnl_post_ops_create(&po));
        DNNL_CHECK(dnnl_post_ops_append_sum(po, 1.0f));
        DNNL_CHECK(dnnl_primitive_attr_set_post_ops(attr, po));
        dnnl_post_ops_destroy(po);
    }
    dnnl_primitive_desc_t pd = NULL;
    *status = dnnl_primitive_desc_create(&pd, &desc, attr, eng, NULL);
    dnnl_primitive_attr_destroy(attr);
    return *status == dnnl_success ? pd : NULL;
}

int mm_dnnl_available(int bf16, char *why, size_t whylen)
{
    dnnl_engine_t eng;
    dnnl_status_t st = dnnl_engine_create(&eng, dnnl_cpu, 0);
    if (st != dnnl_success) {
        snprintf(why, whylen, "oneDNN: no CPU engine (%s)", dnnl_status2str(st));
        return 0;
    }
    dnnl_primitive_desc_t pd =
        product_pd(eng, OP_FWD, 64, 64, 64, bf16 ? dnnl_bf16 : dnnl_f32, &st);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    dnnl_engine_destroy(eng);
    // oneDNN 2.6 also offers bf16 on plain AVX-512, converting to fp32 inside its kernels: no
    // faster than the emulation, so only bf16 instructions count as having it
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    int native = (isa & dnnl_cpu_isa_avx512_core_bf16) == dnnl_cpu_isa_avx512_core_bf16;
    if (st == dnnl_success && (!bf16 || native))
        return 1;
    char lib[96];
    mm_dnnl_describe(lib, sizeof(lib));
    if (bf16 && (st == dnnl_unimplemented || st == dnnl_success))
        snprintf(why, whylen, "%s: no bf16 matmul on this CPU (it needs AVX512-BF16 or AMX)", lib);
    else
        snprintf(why, whylen, "%s: no %s matmul here (%s)", lib, bf16 ? "bf16" : "fp32",
                 dnnl_status2str(st));
    return 0;
}

static const char *isa_name(void)
{
    switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_sse41:
        return "sse41";
    case dnnl_cpu_isa_avx:
        return "avx";
    case dnnl_cpu_isa_avx2:
        return "avx2";
    case dnnl_cpu_isa_avx512_mic:
        return "avx512_mic";
    case dnnl_cpu_isa_avx512_mic_4ops:
        return "avx512_mic_4ops";
    case dnnl_cpu_isa_avx512_core:
        return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni:
        return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16:
        return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx:
        return "avx512_core_amx";
    case dnnl_cpu_isa_avx2_vnni:
        return "avx2_vnni";
    default:
        return "other";
    }
}

void mm_dnnl_describe(char *buf, size_t len)
{
    const dnnl_version_t *v = dnnl_version();
    snprintf(buf, len, "oneDNN %d.%d.%d, instruction set %s", v->major, v->minor, v->patch,
             isa_name());
}

struct mm_dnnl *mm_dnnl_create(int bf16, int rows, size_t cap_act, size_t cap_w)
{
    struct mm_dnnl *d = xcalloc(1, sizeof(*d));
    DNNL_CHECK(dnnl_engine_create(&d->eng, dnnl_cpu, 0));
    DNNL_CHECK(dnnl_stream_create(&d->stream, d->eng, dnnl_stream_default_flags));
    d->bf16 = bf16;
    d->rows = rows;
    d->prims = xcalloc(MAX_PRIMS, sizeof(*d->prims));
    if (bf16) {
        d->cap_act = cap_act;
        d->cap_w = cap_w;
        d->a = xcalloc(cap_act, sizeof(uint16_t));
        d->b = xcalloc(cap_w, sizeof(uint16_t));
        d->c = xcalloc(cap_act, sizeof(uint16_t));
    }
    return d;
}

void mm_dnnl_free(struct mm_dnnl *d)
{
    if (!d)
        return;
    for (int i = 0; i < d->n; i++) {
        struct prim *p = &d->prims[i];
        dnnl_primitive_destroy(p->p);
        if (p->rows > 0) {
            dnnl_memory_destroy(p->src);
            dnnl_memory_destroy(p->wei);
            dnnl_memory_destroy(p->dst);
        }
    }
    dnnl_stream_destroy(d->stream);
    dnnl_engine_destroy(d->eng);
    free(d->prims);
    free(d->a);
    free(d->b);
    free(d->c);
    free(d);
}

void mm_dnnl_set_planning(struct mm_dnnl *d, int on)
{
    d->planning = on;
}

int mm_dnnl_count(const struct mm_dnnl *d)
{
    return d->n;
}

int mm_dnnl_late(const struct mm_dnnl *d)
{
    return d->late;
}

const char *mm_dnnl_impl(const struct mm_dnnl *d, int runtime_rows)
{
    return d->impl[runtime_rows != 0];
}

// Adds name to a comma-separated list of implementations unless it is there.
static void note_impl(char *list, size_t cap, const char *name)
{
    size_t len = strlen(name);
    for (const char *s = list; *s;) {
        const char *e = strchr(s, ',');
        size_t l = e ? (size_t)(e - s) : strlen(s);
        if (l == len && !strncmp(s, name, len))
            return;
        s = e ? e + 1 : s + l;
    }
    size_t used = strlen(list);
    snprintf(list + used, cap - used, "%s%s", used ? "," : "", name);
}

static struct prim *make_prim(struct mm_dnnl *d, enum mm_op op, int rows, int in_dim, int out_dim)
{
    if (d->n == MAX_PRIMS)
        FATAL("oneDNN backend: more than %d product shapes", MAX_PRIMS);
    dnnl_data_type_t dt = d->bf16 ? dnnl_bf16 : dnnl_f32;
    dnnl_status_t st;
    dnnl_primitive_desc_t pd =
        product_pd(d->eng, op, rows > 0 ? rows : DNNL_RUNTIME_DIM_VAL, in_dim, out_dim, dt, &st);
    if (!pd)
        FATAL("oneDNN: no %s matmul for %d x %d x %d: %s", d->bf16 ? "bf16" : "fp32", rows, in_dim,
              out_dim, dnnl_status2str(st));
    struct prim *p = &d->prims[d->n++];
    *p = (struct prim){.op = op, .rows = rows, .in_dim = in_dim, .out_dim = out_dim};
    DNNL_CHECK(dnnl_primitive_create(&p->p, pd));
    const char *impl = NULL;
    DNNL_CHECK(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl));
    note_impl(d->impl[rows == 0], sizeof(d->impl[0]), impl);
    dnnl_primitive_desc_destroy(pd);
    if (rows > 0) {
        dnnl_memory_desc_t src, wei, dst;
        product_mds(op, rows, in_dim, out_dim, dt, &src, &wei, &dst);
        DNNL_CHECK(dnnl_memory_create(&p->src, &src, d->eng, DNNL_MEMORY_NONE));
        DNNL_CHECK(dnnl_memory_create(&p->wei, &wei, d->eng, DNNL_MEMORY_NONE));
        DNNL_CHECK(dnnl_memory_create(&p->dst, &dst, d->eng, DNNL_MEMORY_NONE));
    }
    if (!d->planning)
        d->late++;
    return p;
}

static struct prim *find_prim(struct mm_dnnl *d, enum mm_op op, int rows, int in_dim, int out_dim)
{
    for (int i = 0; i < d->n; i++) {
        struct prim *p = &d->prims[i];
        if (p->op == op && p->rows == rows && p->in_dim == in_dim && p->out_dim == out_dim)
            return p;
    }
    return NULL;
}

// The primitive of a product with n rows: the exact one when n is the usual rows, else the
// runtime-rows one. Planning makes both.
static struct prim *prim_for(struct mm_dnnl *d, enum mm_op op, int n, int in_dim, int out_dim)
{
    if (d->planning && !find_prim(d, op, 0, in_dim, out_dim))
        make_prim(d, op, 0, in_dim, out_dim);
    int rows = n == d->rows ? n : 0;
    struct prim *p = find_prim(d, op, rows, in_dim, out_dim);
    return p ? p : make_prim(d, op, rows, in_dim, out_dim);
}

// Runs the product on src · wei -> dst (already in the operand type).
static void run(struct mm_dnnl *d, struct prim *p, int n, const void *src, const void *wei,
                float *dst)
{
    dnnl_memory_t ms = p->src, mw = p->wei, md = p->dst;
    if (p->rows == 0) { // the runtime-rows primitive runs on memory of this call's rows
        dnnl_memory_desc_t s, w, o;
        product_mds(p->op, n, p->in_dim, p->out_dim, d->bf16 ? dnnl_bf16 : dnnl_f32, &s, &w, &o);
        DNNL_CHECK(dnnl_memory_create(&ms, &s, d->eng, (void *)src));
        DNNL_CHECK(dnnl_memory_create(&mw, &w, d->eng, (void *)wei));
        DNNL_CHECK(dnnl_memory_create(&md, &o, d->eng, dst));
    } else {
        DNNL_CHECK(dnnl_memory_set_data_handle(ms, (void *)src));
        DNNL_CHECK(dnnl_memory_set_data_handle(mw, (void *)wei));
        DNNL_CHECK(dnnl_memory_set_data_handle(md, dst));
    }
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, md}};
    DNNL_CHECK(dnnl_primitive_execute(p->p, d->stream, 3, args));
    DNNL_CHECK(dnnl_stream_wait(d->stream));
    if (p->rows == 0) {
        dnnl_memory_destroy(ms);
        dnnl_memory_destroy(mw);
        dnnl_memory_destroy(md);
    }
}

// x[count] as the operand type: bf16 into the scratch buf (capacity cap), or x itself.
static const void *operand(const struct mm_dnnl *d, uint16_t *buf, size_t cap, const float *x,
                           size_t count)
{
    if (!d->bf16)
        return x;
    if (count > cap)
        FATAL("bf16 operand of %zu floats exceeds the %zu sized at init", count, cap);
    bf16_bits_array(buf, x, count);
    return buf;
}

void mm_dnnl_forward(struct mm_dnnl *d, float *out, const float *in, const float *w, int n,
                     int in_dim, int out_dim, int acc)
{
    if (n == 0 && !d->planning)
        return;
    struct prim *p = prim_for(d, acc ? OP_FWD_ACC : OP_FWD, n, in_dim, out_dim);
    if (d->planning)
        return;
    const void *a = operand(d, d->a, d->cap_act, in, (size_t)n * in_dim);
    const void *b = operand(d, d->b, d->cap_w, w, (size_t)out_dim * in_dim);
    run(d, p, n, a, b, out);
}

void mm_dnnl_backward(struct mm_dnnl *d, float *din, float *dw, const float *dout, const float *in,
                      const float *w, int n, int in_dim, int out_dim)
{
    if (n == 0 && !d->planning)
        return; // no rows: din is empty and dw gains nothing
    struct prim *pin = din ? prim_for(d, OP_DIN, n, in_dim, out_dim) : NULL;
    struct prim *pw = prim_for(d, OP_DW, n, in_dim, out_dim);
    if (d->planning)
        return;
    const void *g = operand(d, d->a, d->cap_act, dout, (size_t)n * out_dim);
    if (din)
        run(d, pin, n, g, operand(d, d->b, d->cap_w, w, (size_t)out_dim * in_dim), din);
    run(d, pw, n, g, operand(d, d->c, d->cap_act, in, (size_t)n * in_dim), dw);
}

// The peak's product: the operands converted on the first (untimed) call, the primitive alone
// after.
struct peak_ctx {
    struct mm_dnnl *d;
    const void *x, *w;
};

static void peak_product(void *ctx, const float *a, const float *b, float *c, int n)
{
    struct peak_ctx *pc = ctx;
    struct mm_dnnl *d = pc->d;
    size_t nn = (size_t)n * n;
    if (!pc->x) {
        pc->x = operand(d, d->a, d->cap_act, a, nn);
        pc->w = operand(d, d->b, d->cap_w, b, nn);
    }
    run(d, prim_for(d, OP_FWD, n, n, n), n, pc->x, pc->w, c);
}

double mm_dnnl_peak_gflops(int bf16, int n, int reps)
{
    size_t nn = (size_t)n * n;
    struct peak_ctx pc = {mm_dnnl_create(bf16, n, nn, nn), NULL, NULL};
    double rate = matmul_rate_gflops(n, reps, peak_product, &pc);
    mm_dnnl_free(pc.d);
    return rate;
}
