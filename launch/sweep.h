// provides: sweep grids — expanding a [sweep] section into run configs, the static plan that
//           hands runs to rank groups, and the sweep index (one row per run).
//
// Plan: a balanced static plan rather than a work queue. Runs are sorted by estimated cost
// (model FLOPs × steps, plus evaluation) and each goes to the group with the least work so far
// (longest-processing-time first). It needs no coordinator rank and no communication while runs
// train — a queue would need one rank to answer requests while it trains, or passive-target RMA,
// whose progress Open MPI does not guarantee during long BLAS calls. The cost of the choice: a run
// that diverges early frees its group early; with many runs per group the imbalance stays small.
#ifndef CANARY_LAUNCH_SWEEP_H
#define CANARY_LAUNCH_SWEEP_H

#include <stddef.h>

#include "launch/config.h"

#define SWEEP_ID_MAX    160
#define SWEEP_VALUE_MAX 64

struct sweep_point {
    struct config cfg;                            // the resolved, validated config of this run
    char id[SWEEP_ID_MAX];                        // directory name: NNN_key-value_...
    char values[SWEEP_MAX_KEYS][SWEEP_VALUE_MAX]; // the swept values as written
    double cost;                                  // estimated FLOPs
    int group;                                    // the rank group that trains it
};

struct sweep_plan {
    struct sweep_point *pts; // [n], in grid order (first key slowest)
    int n;
    int ngroups;
};

// Expands base's [sweep] section: every value is applied through the key's own parser and every
// point is validated for a group of base->sweep.ranks_per_run ranks. Returns 0 or -1 with a
// reason in err (naming the key and value).
int sweep_expand(const struct config *base, struct sweep_plan *plan, char *err, size_t errlen);
void sweep_plan_free(struct sweep_plan *plan);

// Assigns points to ngroups groups (longest processing time first).
void sweep_assign(struct sweep_plan *plan, int ngroups);

// Index file: a header, then one row per finished run (appended under a lock, so groups can
// write as their runs finish), finally rewritten in grid order by sweep_index_finish.
int sweep_index_create(const char *path, const struct config *base, char *err, size_t errlen);
int sweep_index_append(const char *path, const struct config *base, const struct sweep_point *pt,
                       const char *status, long steps, double l0, double final_eval);
int sweep_index_finish(const char *path, char *err, size_t errlen);

#endif
