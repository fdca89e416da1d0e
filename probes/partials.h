// provides: struct partial_layout — the record of small sums, maxima and moments that one
//           micro-batch contributes to the probes, and their combination over the micro-batches
//           of all ranks in global order.
//
// A probe is a statistic of the whole global batch. Each micro-batch (a "leaf": the global batch
// is leaves × micro_batch sequences) fills one record; the records of every rank are gathered
// (dist/) and folded here in global leaf order. With the leaves fixed (deterministic mode) that
// order, and so every bit of the result, is the same at any rank count; maxima are exact at any
// split. A record is a run of segments, each `count` values combined by one operation:
//   PARTIAL_SUM      a + b
//   PARTIAL_MAX      max(a, b), a NaN on either side stays NaN
//   PARTIAL_MOMENTS  `count` triples (n, mean, m2) merged as stats_moments_merge
#ifndef CANARY_PROBES_PARTIALS_H
#define CANARY_PROBES_PARTIALS_H

#include <stddef.h>

enum partial_op { PARTIAL_SUM, PARTIAL_MAX, PARTIAL_MOMENTS };

#define PARTIAL_SEGMENTS_MAX 24

struct partial_layout {
    struct {
        int offset, count; // count values (PARTIAL_MOMENTS: count triples, 3·count doubles)
        enum partial_op op;
    } seg[PARTIAL_SEGMENTS_MAX];
    int nseg;
    int size; // doubles per record
};

void partial_layout_init(struct partial_layout *l);
// Appends a segment of count values (count may be 0); returns its offset in the record.
int partial_layout_add(struct partial_layout *l, enum partial_op op, int count);

// rec ← the identity of every segment: 0 for sums, −∞ for maxima, empty moments.
void partial_identity(const struct partial_layout *l, double *rec);
// acc ← acc ⊕ rec, segment by segment.
void partial_fold(const struct partial_layout *l, double *acc, const double *rec);
// out ← rec[0] ⊕ rec[1] ⊕ … ⊕ rec[n−1], folded in this order; record k starts at recs + k·stride.
void partials_combine(const struct partial_layout *l, const double *recs, size_t stride, int n,
                      double *out);

#endif
