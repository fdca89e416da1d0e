// Bucketed, overlapped gradient averaging and the deterministic tree reduction.
//
// Overlap: MPI only progresses non-blocking collectives inside MPI calls (no progress thread is
// assumed), so dist_reducer_ready also tests the buckets in flight; backward calls it once per
// block, which is often enough to move each bucket along while the next block computes.
#include "dist/reduce.h"

#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"

static MPI_Comm comm_of(const struct dist_ctx *d)
{
    return *(MPI_Comm *)d->comm;
}

void dist_reducer_init(struct dist_reducer *r, struct dist_ctx *d, const size_t *bounds, int nb,
                       size_t bucket_floats, int overlap)
{
    memset(r, 0, sizeof(*r));
    r->d = d;
    r->overlap = overlap;
    r->buckets = calloc((size_t)nb, sizeof(*r->buckets));
    r->requests = calloc((size_t)nb, sizeof(MPI_Request));
    if (!r->buckets || !r->requests)
        dist_world_abort(134);
    // Walk from the tail: a bucket closes at the first tensor boundary that makes it big enough.
    // MPI counts are ints, so a bucket (one huge tensor) is cut into pieces of at most 2^30.
    const size_t max_count = (size_t)1 << 30;
    size_t hi = bounds[nb];
    int cap = nb;
    for (int i = nb - 1; i >= 0; i--) {
        size_t lo = bounds[i];
        if (hi - lo >= bucket_floats || i == 0) {
            while (hi > lo) {
                size_t piece_lo = hi - lo > max_count ? hi - max_count : lo;
                if (r->n == cap) {
                    cap *= 2;
                    r->buckets = realloc(r->buckets, (size_t)cap * sizeof(*r->buckets));
                    r->requests = realloc(r->requests, (size_t)cap * sizeof(MPI_Request));
                    if (!r->buckets || !r->requests)
                        dist_world_abort(134);
                }
                r->buckets[r->n].lo = piece_lo;
                r->buckets[r->n].hi = hi;
                r->buckets[r->n].started = 0;
                r->n++;
                hi = piece_lo;
            }
            hi = lo;
        }
    }
    for (int i = 0; i < r->n; i++)
        ((MPI_Request *)r->requests)[i] = MPI_REQUEST_NULL;
}

void dist_reducer_free(struct dist_reducer *r)
{
    free(r->buckets);
    free(r->requests);
    memset(r, 0, sizeof(*r));
}

void dist_reducer_begin(struct dist_reducer *r, float *buf)
{
    r->buf = buf;
    for (int i = 0; i < r->n; i++)
        r->buckets[i].started = 0;
}

static void bucket_start(struct dist_reducer *r, int i)
{
    struct dist_bucket *b = &r->buckets[i];
    MPI_Request *req = (MPI_Request *)r->requests + i;
    MPI_Iallreduce(MPI_IN_PLACE, r->buf + b->lo, (int)(b->hi - b->lo), MPI_FLOAT, MPI_SUM,
                   comm_of(r->d), req);
    b->started = 1;
}

void dist_reducer_ready(struct dist_reducer *r, size_t from)
{
    int flag = 0;
    if (r->d->size == 1 || !r->overlap)
        return;
    for (int i = 0; i < r->n; i++)
        if (!r->buckets[i].started && r->buckets[i].lo >= from)
            bucket_start(r, i);
    MPI_Testall(r->n, (MPI_Request *)r->requests, &flag, MPI_STATUSES_IGNORE);
}

void dist_reducer_finish(struct dist_reducer *r)
{
    if (r->d->size == 1)
        return;
    double t0 = MPI_Wtime();
    for (int i = 0; i < r->n; i++)
        if (!r->buckets[i].started)
            bucket_start(r, i);
    MPI_Waitall(r->n, (MPI_Request *)r->requests, MPI_STATUSES_IGNORE);
    r->wait_seconds = MPI_Wtime() - t0;
}

void dist_tree_allreduce_f32(struct dist_ctx *d, float *buf, float *scratch, size_t n)
{
    MPI_Comm comm = comm_of(d);
    for (int mask = 1; mask < d->size; mask <<= 1) {
        int partner = d->rank ^ mask;
        size_t done = 0;
        while (done < n) {
            size_t chunk = n - done < (1u << 28) ? n - done : (1u << 28);
            MPI_Sendrecv(buf + done, (int)chunk, MPI_FLOAT, partner, 17, scratch + done, (int)chunk,
                         MPI_FLOAT, partner, 17, comm, MPI_STATUS_IGNORE);
            done += chunk;
        }
        // a + b == b + a in IEEE arithmetic, so both partners compute the same bits.
        for (size_t i = 0; i < n; i++)
            buf[i] = buf[i] + scratch[i];
    }
}

void dist_gather_init(struct dist_gather *g, struct dist_ctx *d, const size_t *counts,
                      size_t max_count)
{
    size_t total = 0;
    g->counts = calloc((size_t)d->size * 2, sizeof(size_t));
    g->icounts = calloc((size_t)d->size * 2, sizeof(int));
    if (!g->counts || !g->icounts)
        dist_world_abort(134);
    g->displs = g->counts + d->size;
    g->idispls = g->icounts + d->size;
    g->max_count = max_count ? max_count : (size_t)1 << 30;
    g->fits = 1;
    for (int q = 0; q < d->size; q++) {
        g->counts[q] = counts[q];
        g->displs[q] = total;
        total += counts[q];
        g->fits = g->fits && total <= g->max_count;
        g->icounts[q] = g->fits ? (int)counts[q] : 0;
        g->idispls[q] = g->fits ? (int)g->displs[q] : 0;
    }
    g->total = total;
}

void dist_gather_free(struct dist_gather *g)
{
    free(g->counts);
    free(g->icounts);
    memset(g, 0, sizeof(*g));
}

void dist_gather_f32(struct dist_ctx *d, const struct dist_gather *g, const float *send,
                     float *recv)
{
    if (g->fits) {
        MPI_Allgatherv(send, g->icounts[d->rank], MPI_FLOAT, recv, g->icounts, g->idispls,
                       MPI_FLOAT, comm_of(d));
        return;
    }
    // MPI counts and displacements are ints; past them, one chunked broadcast per owner.
    memcpy(recv + g->displs[d->rank], send, g->counts[d->rank] * sizeof(float));
    for (int q = 0; q < d->size; q++)
        for (size_t at = 0; at < g->counts[q]; at += g->max_count) {
            size_t n = g->counts[q] - at < g->max_count ? g->counts[q] - at : g->max_count;
            MPI_Bcast(recv + g->displs[q] + at, (int)n, MPI_FLOAT, q, comm_of(d));
        }
}

void dist_allgather_f64(struct dist_ctx *d, const double *in, double *out, size_t n)
{
    MPI_Allgather(in, (int)n, MPI_DOUBLE, out, (int)n, MPI_DOUBLE, comm_of(d));
}

int dist_first_mismatch_u64(struct dist_ctx *d, const unsigned long long *vals,
                            unsigned long long *scratch, int n)
{
    unsigned long long *mn = scratch, *mx = scratch + n;
    MPI_Allreduce(vals, mn, n, MPI_UNSIGNED_LONG_LONG, MPI_MIN, comm_of(d));
    MPI_Allreduce(vals, mx, n, MPI_UNSIGNED_LONG_LONG, MPI_MAX, comm_of(d));
    for (int i = 0; i < n; i++)
        if (mn[i] != mx[i])
            return i;
    return -1;
}
