// HDF5 wrapper: fixed datasets (checkpoints' tensors, string tables) and dimension scales.
#include <hdf5.h>
#include <hdf5_hl.h> // H5DS: dimension scales
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "probes/h5.h"
#include "probes/h5_private.h"

// Creates the fixed-size dataset path (and its parent groups) and writes data into it.
static int dataset_write(struct h5file *f, const char *path, hid_t type, hid_t space, hid_t dcpl,
                         const void *data, char *err, size_t errlen)
{
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t dset = H5Dcreate2(f->file, path, type, space, lcpl, dcpl, H5P_DEFAULT);
    int rc = -1;
    if (dset >= 0 && H5Dwrite(dset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0)
        rc = 0;
    else
        FAIL("write dataset '%s' in '%s' failed (disk full?)", path, f->path);
    if (dset >= 0)
        H5Dclose(dset);
    H5Pclose(lcpl);
    return rc;
}

static int write_typed(struct h5file *f, const char *path, int ndim, const size_t *dims, hid_t type,
                       const void *data, char *err, size_t errlen)
{
    hsize_t d[4], chunk[4];
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        d[i] = dims[i];
        count *= dims[i];
    }
    // One chunk per dataset, capped at 1 Mi values per chunk along the first axis.
    for (int i = 0; i < ndim; i++)
        chunk[i] = d[i] ? d[i] : 1;
    size_t row = count / (d[0] ? d[0] : 1);
    if (count > (1u << 20))
        chunk[0] = (1u << 20) / (row ? row : 1) ? (1u << 20) / (row ? row : 1) : 1;
    hid_t space = H5Screate_simple(ndim, d, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, ndim, chunk);
    H5Pset_fletcher32(dcpl);
    int rc = dataset_write(f, path, type, space, dcpl, data, err, errlen);
    H5Pclose(dcpl);
    H5Sclose(space);
    return rc;
}

int h5_write_f32(struct h5file *f, const char *path, int ndim, const size_t *dims,
                 const float *data, char *err, size_t errlen)
{
    return write_typed(f, path, ndim, dims, H5T_NATIVE_FLOAT, data, err, errlen);
}

int h5_write_f64(struct h5file *f, const char *path, int ndim, const size_t *dims,
                 const double *data, char *err, size_t errlen)
{
    return write_typed(f, path, ndim, dims, H5T_NATIVE_DOUBLE, data, err, errlen);
}

static int read_typed(struct h5file *f, const char *path, hid_t type, void *data, size_t count,
                      int *ndim, size_t *dims, char *err, size_t errlen)
{
    hid_t dset = -1, space = -1;
    hsize_t d[4];
    size_t n = 1;
    int rc = -1;
    if (H5Lexists(f->file, path, H5P_DEFAULT) <= 0) {
        FAIL("'%s' has no dataset '%s'", f->path, path);
        return -1;
    }
    dset = H5Dopen2(f->file, path, H5P_DEFAULT);
    space = dset >= 0 ? H5Dget_space(dset) : -1;
    int nd = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    if (nd < 1 || nd > 4) {
        FAIL("dataset '%s' in '%s' is not a 1-4 dimensional array", path, f->path);
        goto out;
    }
    H5Sget_simple_extent_dims(space, d, NULL);
    for (int i = 0; i < nd; i++) {
        n *= d[i];
        dims[i] = d[i];
    }
    *ndim = nd;
    if (n != count) {
        FAIL("dataset '%s' in '%s' holds %zu values, expected %zu", path, f->path, n, count);
        goto out;
    }
    if (H5Dread(dset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) {
        FAIL("read dataset '%s' in '%s' failed: checksum mismatch or corrupt file", path, f->path);
        goto out;
    }
    rc = 0;
out:
    if (space >= 0)
        H5Sclose(space);
    if (dset >= 0)
        H5Dclose(dset);
    return rc;
}

int h5_read_f32(struct h5file *f, const char *path, float *data, size_t count, int *ndim,
                size_t *dims, char *err, size_t errlen)
{
    return read_typed(f, path, H5T_NATIVE_FLOAT, data, count, ndim, dims, err, errlen);
}

int h5_read_f64(struct h5file *f, const char *path, double *data, size_t count, int *ndim,
                size_t *dims, char *err, size_t errlen)
{
    return read_typed(f, path, H5T_NATIVE_DOUBLE, data, count, ndim, dims, err, errlen);
}

int h5_exists(struct h5file *f, const char *path)
{
    return H5Lexists(f->file, path, H5P_DEFAULT) > 0;
}

int h5_write_strings(struct h5file *f, const char *path, const char *const *strings, int n,
                     char *err, size_t errlen)
{
    hsize_t d = (hsize_t)n;
    hid_t type = h5_string_type();
    hid_t space = H5Screate_simple(1, &d, NULL);
    int rc = dataset_write(f, path, type, space, H5P_DEFAULT, strings, err, errlen);
    H5Sclose(space);
    H5Tclose(type);
    return rc;
}

int h5_write_i32(struct h5file *f, const char *path, int ndim, const size_t *dims,
                 const int32_t *data, char *err, size_t errlen)
{
    hsize_t d[4];
    for (int i = 0; i < ndim && i < 4; i++)
        d[i] = dims[i];
    hid_t space = H5Screate_simple(ndim, d, NULL);
    int rc = dataset_write(f, path, H5T_NATIVE_INT32, space, H5P_DEFAULT, data, err, errlen);
    H5Sclose(space);
    return rc;
}

int h5_dim_scale(struct h5file *f, const char *path, const char *name, char *err, size_t errlen)
{
    hid_t d = H5Dopen2(f->file, path, H5P_DEFAULT);
    herr_t e = d >= 0 ? H5DSset_scale(d, name) : -1;
    if (d >= 0)
        H5Dclose(d);
    if (e < 0) {
        FAIL("make '%s' a dimension scale in '%s' failed", path, f->path);
        return -1;
    }
    return 0;
}

int h5_dim_attach(struct h5file *f, const char *path, int dim, const char *scale, char *err,
                  size_t errlen)
{
    hid_t d = H5Dopen2(f->file, path, H5P_DEFAULT), s = H5Dopen2(f->file, scale, H5P_DEFAULT);
    herr_t e = d >= 0 && s >= 0 ? H5DSattach_scale(d, s, (unsigned)dim) : -1;
    if (d >= 0)
        H5Dclose(d);
    if (s >= 0)
        H5Dclose(s);
    if (e < 0) {
        FAIL("attach scale '%s' to dimension %d of '%s' in '%s' failed", scale, dim, path, f->path);
        return -1;
    }
    return 0;
}
