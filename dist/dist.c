// MPI context, communicator splits, small collectives and job abort (dist/reduce.c has the
// gradient reduction and the gathers).
#include "dist/dist.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

int dist_init(struct dist_ctx *d, int *argc, char ***argv)
{
    int initialized = 0;
    MPI_Comm *comm = NULL;
    d->owns_mpi = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
        // OpenMP threads run between MPI calls, but only the main thread calls MPI.
        int provided = 0;
        if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
            return -1;
        d->owns_mpi = 1;
        if (provided < MPI_THREAD_FUNNELED)
            fprintf(stderr, "canary: warning: MPI provides no MPI_THREAD_FUNNELED support\n");
    }
    comm = malloc(sizeof(*comm));
    if (!comm)
        return -1;
    // Errors on the training communicator abort the job: a failed collective is never
    // recoverable for a data-parallel step.
    MPI_Comm_dup(MPI_COMM_WORLD, comm);
    MPI_Comm_set_errhandler(*comm, MPI_ERRORS_ARE_FATAL);
    MPI_Comm_rank(*comm, &d->rank);
    MPI_Comm_size(*comm, &d->size);
    d->comm = comm;
    return 0;
}

void dist_free(struct dist_ctx *d)
{
    int finalized = 0;
    if (d->comm) {
        MPI_Comm_free((MPI_Comm *)d->comm);
        free(d->comm);
        d->comm = NULL;
    }
    MPI_Finalized(&finalized);
    if (d->owns_mpi && !finalized)
        MPI_Finalize();
}

int dist_split(struct dist_ctx *d, int color, struct dist_ctx *child)
{
    MPI_Comm *comm = malloc(sizeof(*comm));
    if (!comm)
        return -1;
    if (MPI_Comm_split(*(MPI_Comm *)d->comm, color, d->rank, comm) != MPI_SUCCESS) {
        free(comm);
        return -1;
    }
    MPI_Comm_set_errhandler(*comm, MPI_ERRORS_ARE_FATAL);
    MPI_Comm_rank(*comm, &child->rank);
    MPI_Comm_size(*comm, &child->size);
    child->comm = comm;
    child->owns_mpi = 0;
    return 0;
}

double dist_max_f64(struct dist_ctx *d, double v)
{
    double out = v;
    MPI_Allreduce(&v, &out, 1, MPI_DOUBLE, MPI_MAX, *(MPI_Comm *)d->comm);
    return out;
}

void dist_bcast_bytes(struct dist_ctx *d, void *buf, size_t bytes)
{
    // MPI counts are int: send in chunks of at most 1 GiB.
    char *p = buf;
    while (bytes > 0) {
        size_t chunk = bytes < (1u << 30) ? bytes : (1u << 30);
        MPI_Bcast(p, (int)chunk, MPI_BYTE, 0, *(MPI_Comm *)d->comm);
        p += chunk;
        bytes -= chunk;
    }
}

int dist_all_ok(struct dist_ctx *d, int ok)
{
    int in = ok ? 1 : 0, out = 0;
    if (d->size == 1)
        return in;
    MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_MIN, *(MPI_Comm *)d->comm);
    return out;
}

void dist_barrier(struct dist_ctx *d)
{
    MPI_Barrier(*(MPI_Comm *)d->comm);
}

void dist_allreduce_max_f64(struct dist_ctx *d, double *buf, size_t n)
{
    if (d->size == 1)
        return;
    while (n > 0) {
        size_t chunk = n < (1u << 28) ? n : (1u << 28);
        MPI_Allreduce(MPI_IN_PLACE, buf, (int)chunk, MPI_DOUBLE, MPI_MAX, *(MPI_Comm *)d->comm);
        buf += chunk;
        n -= chunk;
    }
}

void dist_allreduce_sum_f64(struct dist_ctx *d, double *buf, size_t n)
{
    while (n > 0) {
        size_t chunk = n < (1u << 28) ? n : (1u << 28);
        MPI_Allreduce(MPI_IN_PLACE, buf, (int)chunk, MPI_DOUBLE, MPI_SUM, *(MPI_Comm *)d->comm);
        buf += chunk;
        n -= chunk;
    }
}

void dist_library_version(char *out, size_t len)
{
    char version[MPI_MAX_LIBRARY_VERSION_STRING];
    int n = 0;
    MPI_Get_library_version(version, &n);
    for (int i = 0; i < n; i++)
        if (version[i] == '\n')
            version[i] = ' ';
    snprintf(out, len, "%.*s", n, version);
}

int dist_world_rank(void)
{
    int initialized = 0, finalized = 0, rank = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (initialized && !finalized)
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    return rank;
}

int dist_world_size(void)
{
    int initialized = 0, finalized = 0, size = 1;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (initialized && !finalized)
        MPI_Comm_size(MPI_COMM_WORLD, &size);
    return size;
}

void dist_world_abort(int code)
{
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (initialized && !finalized)
        MPI_Abort(MPI_COMM_WORLD, code);
    abort();
}
