// provides: struct dist_reducer — gradient summation over the ranks of a dist_ctx, in buckets
//           that start (MPI_Iallreduce) as soon as backward finishes them; and the fixed-order
//           tree reduction of train.deterministic.
//
// Buckets are contiguous float ranges of the flat gradient array, closed at tensor boundaries and
// laid out back to front (the order backward completes them). The caller (launch/) tells the
// reducer how far backward has got with dist_reducer_ready(); nothing here knows about models.
#ifndef CANARY_DIST_REDUCE_H
#define CANARY_DIST_REDUCE_H

#include <stddef.h>

#include "dist/dist.h"

struct dist_bucket {
    size_t lo, hi; // float range [lo, hi) of the gradient array
    int started;
};

struct dist_reducer {
    struct dist_ctx *d;
    float *buf;                  // the gradient array being reduced (not owned)
    struct dist_bucket *buckets; // [n], buckets[0] is the tail of the array (finished first)
    int n;
    void *requests; // MPI_Request[n], opaque outside dist/
    int overlap;    // 0: everything is reduced in dist_reducer_finish (blocking, for comparison)
    double wait_seconds; // time spent blocked in the last dist_reducer_finish
};

// bounds[0..nb] are the ascending float offsets where a bucket may end (tensor boundaries,
// bounds[0] = 0, bounds[nb] = total). Buckets are grown from the tail until they hold at least
// bucket_floats. Allocates; call at init.
void dist_reducer_init(struct dist_reducer *r, struct dist_ctx *d, const size_t *bounds, int nb,
                       size_t bucket_floats, int overlap);
void dist_reducer_free(struct dist_reducer *r);

// Starts a step's reduction of buf (no communication yet).
void dist_reducer_begin(struct dist_reducer *r, float *buf);
// Floats [from, total) of buf are final: start every bucket inside that range, and let MPI
// progress the ones in flight. Cheap when there is nothing to do.
void dist_reducer_ready(struct dist_reducer *r, size_t from);
// Starts whatever is left and waits for all buckets: buf then holds the sum over ranks (callers
// pre-scale their contribution, e.g. by 1/global micro-batches, to get the mean).
void dist_reducer_finish(struct dist_reducer *r);

// Deterministic sum over ranks: recursive doubling (butterfly) with a fixed pairing, so every rank
// ends with the same bits and the summation tree is the same balanced tree for any power-of-two
// rank count. scratch holds n floats. Blocking. Requires a power-of-two d->size.
void dist_tree_allreduce_f32(struct dist_ctx *d, float *buf, float *scratch, size_t n);

// Gathers every rank's block into one buffer: rank q's counts[q] floats land at displs[q] (the
// blocks in rank order, displs the running sums). One MPI_Allgatherv while the whole buffer is at
// most max_count floats (MPI counts are ints, and some transports fail on messages over 2 GiB);
// past that, broadcasts from each rank in chunks of max_count floats.
struct dist_gather {
    size_t *counts, *displs; // [size] each
    int *icounts, *idispls;  // the same as ints, when fits
    size_t total, max_count;
    int fits; // total <= max_count: one MPI_Allgatherv
};
// Allocates; call once at setup. counts[size]; max_count 0 means 2^30 (tests pass less).
void dist_gather_init(struct dist_gather *g, struct dist_ctx *d, const size_t *counts,
                      size_t max_count);
void dist_gather_free(struct dist_gather *g);
// send[g->counts[rank]] of every rank → recv[g->total] on every rank. Blocking; no allocation.
void dist_gather_f32(struct dist_ctx *d, const struct dist_gather *g, const float *send,
                     float *recv);

// out[rank·n + i] = in[i] of every rank (blocking).
void dist_allgather_f64(struct dist_ctx *d, const double *in, double *out, size_t n);

// Index of the first i where vals[i] differs between ranks, or -1 when all ranks agree.
// scratch holds 2·n values.
int dist_first_mismatch_u64(struct dist_ctx *d, const unsigned long long *vals,
                            unsigned long long *scratch, int n);

#endif
