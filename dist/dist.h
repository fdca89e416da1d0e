// provides: struct dist_ctx and its init/free, communicator splits for sweeps, small
//           collectives (max, AND, sum, broadcast, barrier), the MPI version, job abort.
//
// Everything MPI lives in dist/: no other folder includes <mpi.h> or names a communicator. A
// dist_ctx is the communicator a run trains on: the world for `canary train`, a group of ranks
// (dist_split) for each run of a sweep. The gradient reduction (bucketed, overlapped, or the
// deterministic tree) and the gathers of per-micro-batch loss and probe records are in
// dist/reduce.h.
#ifndef CANARY_DIST_DIST_H
#define CANARY_DIST_DIST_H

#include <stddef.h>

struct dist_ctx {
    int rank;     // this rank in comm
    int size;     // ranks in comm
    void *comm;   // MPI_Comm *, owned; opaque outside dist/
    int owns_mpi; // 1 if dist_init called MPI_Init and dist_free must finalize
};

// Initialises MPI (if not already) and a context on the world communicator. Returns 0 or -1.
int dist_init(struct dist_ctx *d, int *argc, char ***argv);
void dist_free(struct dist_ctx *d);

// Splits d into groups of ranks with the same color (MPI_Comm_split, ordered by rank): child
// becomes the context of this rank's group. Free child with dist_free (MPI stays up).
int dist_split(struct dist_ctx *d, int color, struct dist_ctx *child);

// Max of v over the ranks of d.
double dist_max_f64(struct dist_ctx *d, double v);

// buf[n] ← the element-wise maximum over the ranks, in place (exact: the same on any rank count).
void dist_allreduce_max_f64(struct dist_ctx *d, double *buf, size_t n);

// Broadcast bytes from rank 0 of d's communicator.
void dist_bcast_bytes(struct dist_ctx *d, void *buf, size_t bytes);
// Logical AND of ok over the ranks of d (for "did every rank load its config/data").
int dist_all_ok(struct dist_ctx *d, int ok);
void dist_barrier(struct dist_ctx *d);
// In-place sum over the ranks of d (blocking).
void dist_allreduce_sum_f64(struct dist_ctx *d, double *buf, size_t n);

// The MPI library's version string (for provenance).
void dist_library_version(char *out, size_t len);

// World rank, or 0 when MPI is not initialised (for error messages from any code).
int dist_world_rank(void);
int dist_world_size(void);
// Aborts every rank of the job (MPI_Abort when MPI is up, else exit). Never returns.
void dist_world_abort(int code) __attribute__((noreturn));

#endif
