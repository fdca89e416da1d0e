// HDF5 wrapper: extendible, chunked series (one row per step or probe step).
#include <hdf5.h>
#include <hdf5_hl.h> // H5DS: dimension scales
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "probes/h5.h"
#include "probes/h5_private.h"

static int series_add(struct h5file *f, hid_t dset, char *err, size_t errlen)
{
    struct h5series *s = NULL;
    hid_t space = H5Dget_space(dset);
    hsize_t dims[3] = {0, 0, 0};
    int nd = H5Sget_simple_extent_ndims(space);
    H5Sget_simple_extent_dims(space, dims, NULL);
    H5Sclose(space);
    if (f->nseries == H5_MAX_SERIES || nd < 1 || nd > 3) {
        FAIL("'%s': too many series or a bad series shape", f->path);
        return -1;
    }
    s = &f->series[f->nseries];
    s->dset = dset;
    s->ndim = nd - 1;
    s->rows = dims[0];
    s->row_size = 1;
    for (int i = 0; i < s->ndim; i++) {
        s->dims[i] = dims[i + 1];
        s->row_size *= dims[i + 1];
    }
    return f->nseries++;
}

// Creates an extendible, chunked dataset of `type` (rank dimensions, the first unlimited) with
// parent groups as needed and a "description" attribute, and registers it as a series.
static int series_new(struct h5file *f, const char *path, hid_t type, int rank, const hsize_t *cur,
                      const hsize_t *max, const hsize_t *chunk, const char *description,
                      int *series, char *err, size_t errlen)
{
    hid_t space = H5Screate_simple(rank, cur, max);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE), lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_chunk(dcpl, rank, chunk);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t dset = H5Dcreate2(f->file, path, type, space, lcpl, dcpl, H5P_DEFAULT);
    H5Pclose(lcpl);
    H5Pclose(dcpl);
    H5Sclose(space);
    if (dset < 0) {
        FAIL("create series '%s' in '%s' failed", path, f->path);
        return -1;
    }
    if (description && description[0]) {
        hid_t stype = h5_string_type(), aspace = H5Screate(H5S_SCALAR);
        hid_t a = H5Acreate2(dset, "description", stype, aspace, H5P_DEFAULT, H5P_DEFAULT);
        if (a >= 0) {
            H5Awrite(a, stype, &description);
            H5Aclose(a);
        }
        H5Sclose(aspace);
        H5Tclose(stype);
    }
    *series = series_add(f, dset, err, errlen);
    if (*series < 0) {
        H5Dclose(dset);
        return -1;
    }
    return 0;
}

int h5_series_create(struct h5file *f, const char *path, int ndim, const int *dims,
                     const char *description, int *series, char *err, size_t errlen)
{
    hsize_t cur[3] = {0, 1, 1}, max[3] = {H5S_UNLIMITED, 1, 1}, chunk[3] = {64, 1, 1};
    hsize_t row = 1;
    for (int i = 0; i < ndim; i++) {
        cur[i + 1] = max[i + 1] = chunk[i + 1] = (hsize_t)dims[i];
        row *= (hsize_t)dims[i];
    }
    // about 64 KiB chunks: few enough for fast appends, small enough for partial reads
    chunk[0] = row >= 8192 ? 1 : 8192 / row;
    return series_new(f, path, H5T_NATIVE_DOUBLE, ndim + 1, cur, max, chunk, description, series,
                      err, errlen);
}

int h5_series_create_str(struct h5file *f, const char *path, const char *description, int *series,
                         char *err, size_t errlen)
{
    hsize_t cur = 0, max = H5S_UNLIMITED, chunk = 64;
    hid_t type = h5_string_type();
    int rc = series_new(f, path, type, 1, &cur, &max, &chunk, description, series, err, errlen);
    H5Tclose(type);
    return rc;
}

int h5_series_append_str(struct h5file *f, int id, const char *value, char *err, size_t errlen)
{
    struct h5series *s = &f->series[id];
    hsize_t ext = s->rows + 1, start = s->rows, count = 1;
    hid_t type = h5_string_type(), fspace = -1, mspace = -1;
    int rc = -1;
    if (H5Dset_extent(s->dset, &ext) < 0)
        goto out;
    fspace = H5Dget_space(s->dset);
    mspace = H5Screate_simple(1, &count, NULL);
    if (H5Sselect_hyperslab(fspace, H5S_SELECT_SET, &start, NULL, &count, NULL) < 0 ||
        H5Dwrite(s->dset, type, mspace, fspace, H5P_DEFAULT, &value) < 0)
        goto out;
    s->rows++;
    rc = 0;
out:
    if (mspace >= 0)
        H5Sclose(mspace);
    if (fspace >= 0)
        H5Sclose(fspace);
    H5Tclose(type);
    if (rc != 0)
        FAIL("append to a text series of '%s' failed (disk full?)", f->path);
    return rc;
}

int h5_series_open(struct h5file *f, const char *path, int *series, char *err, size_t errlen)
{
    hid_t dset = H5Dopen2(f->file, path, H5P_DEFAULT);
    if (dset < 0) {
        FAIL("open series '%s' in '%s' failed", path, f->path);
        return -1;
    }
    *series = series_add(f, dset, err, errlen);
    return *series < 0 ? -1 : 0;
}

int h5_series_append(struct h5file *f, int id, const double *row, char *err, size_t errlen)
{
    struct h5series *s = &f->series[id];
    hsize_t ext[3] = {s->rows + 1, s->dims[0], s->dims[1]};
    hsize_t start[3] = {s->rows, 0, 0}, count[3] = {1, s->dims[0], s->dims[1]};
    hid_t fspace = -1, mspace = -1;
    int rc = -1;
    if (H5Dset_extent(s->dset, ext) < 0)
        goto out;
    fspace = H5Dget_space(s->dset);
    mspace = H5Screate_simple(s->ndim + 1, count, NULL);
    if (H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL) < 0)
        goto out;
    if (H5Dwrite(s->dset, H5T_NATIVE_DOUBLE, mspace, fspace, H5P_DEFAULT, row) < 0)
        goto out;
    s->rows++;
    rc = 0;
out:
    if (mspace >= 0)
        H5Sclose(mspace);
    if (fspace >= 0)
        H5Sclose(fspace);
    if (rc != 0)
        FAIL("append a row to a series of '%s' failed (disk full?)", f->path);
    return rc;
}

long h5_series_rows(struct h5file *f, int id)
{
    return (long)f->series[id].rows;
}

int h5_series_truncate(struct h5file *f, int id, long rows, char *err, size_t errlen)
{
    struct h5series *s = &f->series[id];
    hsize_t ext[3] = {(hsize_t)rows, s->dims[0], s->dims[1]};
    if ((hsize_t)rows >= s->rows)
        return 0;
    if (H5Dset_extent(s->dset, ext) < 0) {
        FAIL("truncate a series of '%s' failed", f->path);
        return -1;
    }
    s->rows = (hsize_t)rows;
    return 0;
}

int h5_series_read_row(struct h5file *f, int id, long row, double *out, char *err, size_t errlen)
{
    struct h5series *s = &f->series[id];
    hsize_t start[3] = {(hsize_t)row, 0, 0}, count[3] = {1, s->dims[0], s->dims[1]};
    hid_t fspace = H5Dget_space(s->dset), mspace = H5Screate_simple(s->ndim + 1, count, NULL);
    int rc = -1;
    if ((hsize_t)row < s->rows &&
        H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL) >= 0 &&
        H5Dread(s->dset, H5T_NATIVE_DOUBLE, mspace, fspace, H5P_DEFAULT, out) >= 0)
        rc = 0;
    H5Sclose(mspace);
    H5Sclose(fspace);
    if (rc != 0)
        FAIL("read row %ld of a series of '%s' failed", row, f->path);
    return rc;
}
