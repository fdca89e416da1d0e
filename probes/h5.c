// HDF5 wrapper. Errors: HDF5's own error stack printing is turned off; each call checks its
// return value and reports the operation and object in err.
#include "probes/h5.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <hdf5_hl.h> // H5DS: dimension scales
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define H5_MAX_SERIES 256

struct h5series {
    hid_t dset;
    int ndim;        // row dimensions (0..2)
    hsize_t dims[2]; // row shape
    hsize_t rows;
    hsize_t row_size;
};

struct h5file {
    hid_t file;
    char path[1024];
    struct h5series series[H5_MAX_SERIES];
    int nseries;
};

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, errlen, __VA_ARGS__);                                                        \
    } while (0)

// ---- the seal of memory-built files ----
// The seal: H5_SEAL_BYTES in front of the HDF5 image (which HDF5 then reads as a user block).
// Layout (little-endian, as written by the machines canary runs on): 16 bytes of
// magic, the file size (u64), the hash of bytes [H5_SEAL_BYTES, size) (u64), zeros.
static const char seal_magic[16] = "canary-sealed-1";

// 64-bit FNV-1a over 8-byte words, then the tail bytes: any flipped bit or cut changes it. Not a
// defence against someone forging a file on purpose (nothing here is).
static uint64_t seal_hash(const unsigned char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull, w;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    for (; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

void h5_seal_image(unsigned char *image, size_t size)
{
    uint64_t n = size, h = seal_hash(image + H5_SEAL_BYTES, size - H5_SEAL_BYTES);
    memset(image, 0, H5_SEAL_BYTES);
    memcpy(image, seal_magic, sizeof(seal_magic));
    memcpy(image + 16, &n, 8);
    memcpy(image + 24, &h, 8);
}

int h5_seal_check(const unsigned char *image, size_t size, char *err, size_t errlen)
{
    uint64_t n, h;
    if (size < H5_SEAL_BYTES || memcmp(image, seal_magic, sizeof(seal_magic)) != 0) {
        FAIL("not a sealed canary file (no seal in its first %d bytes)", H5_SEAL_BYTES);
        return -1;
    }
    memcpy(&n, image + 16, 8);
    memcpy(&h, image + 24, 8);
    if (n != size) {
        FAIL("%zu bytes where %llu were written (truncated or appended to)", size,
             (unsigned long long)n);
        return -1;
    }
    if (h != seal_hash(image + H5_SEAL_BYTES, size - H5_SEAL_BYTES)) {
        FAIL("contents changed since it was written (hash mismatch: damaged on disk?)");
        return -1;
    }
    return 0;
}

// Reads a regular file whole (a FIFO or device is refused before it could block).
static unsigned char *read_whole(const char *path, size_t *size, char *err, size_t errlen)
{
    struct stat st;
    unsigned char *buf = NULL;
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0) {
        FAIL("open '%s': %s", path, strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        FAIL("'%s' is not a regular file", path);
        goto out;
    }
    buf = malloc(st.st_size > 0 ? (size_t)st.st_size : 1);
    if (!buf) {
        FAIL("read '%s': out of memory for %lld bytes", path, (long long)st.st_size);
        goto out;
    }
    size_t done = 0;
    while (done < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + done, (size_t)st.st_size - done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            FAIL("read '%s': %s", path, r < 0 ? strerror(errno) : "file shrank while read");
            free(buf);
            buf = NULL;
            goto out;
        }
        done += (size_t)r;
    }
    *size = done;
out:
    close(fd);
    return buf;
}

// Opens a sealed file: checked whole in memory, then parsed by HDF5 from that memory.
static int open_sealed(struct h5file *f, const char *path, char *err, size_t errlen)
{
    size_t size = 0;
    char why[300];
    unsigned char *buf = read_whole(path, &size, why, sizeof(why));
    if (!buf) {
        FAIL("%s", why);
        return -1;
    }
    if (h5_seal_check(buf, size, why, sizeof(why)) != 0) {
        FAIL("'%s': %s", path, why);
        free(buf);
        return -1;
    }
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_core(fapl, 1 << 20, 0);
    H5Pset_file_image(fapl, buf + H5_SEAL_BYTES, size - H5_SEAL_BYTES); // HDF5 copies it
    // The core driver refuses an image under the name of a file that exists on disk.
    char name[1100];
    snprintf(name, sizeof(name), "%s (sealed image in memory)", path);
    f->file = H5Fopen(name, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    free(buf);
    if (f->file < 0) {
        FAIL("'%s' has an intact seal but HDF5 cannot open it", path);
        return -1;
    }
    return 0;
}

int h5_open(struct h5file **out, const char *path, enum h5_mode mode, char *err, size_t errlen)
{
    struct h5file *f = calloc(1, sizeof(*f));
    hid_t fapl = -1;
    *out = NULL;
    if (!f) {
        FAIL("open '%s': out of memory", path);
        return -1;
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); // we report errors ourselves
    snprintf(f->path, sizeof(f->path), "%s", path);
    if (mode == H5_SEALED) {
        if (open_sealed(f, path, err, errlen) != 0) {
            free(f);
            return -1;
        }
        *out = f;
        return 0;
    }
    fapl = H5Pcreate(H5P_FILE_ACCESS);
    // The latest format is what SWMR needs; files still open with any h5py on HDF5 ≥ 1.10.
    if (mode != H5_MEMORY) // memory images keep the default format: see h5_write_image
        H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
    if (mode == H5_READWRITE) {
        // A run killed while writing in SWMR mode leaves the "open for writing" marks in the
        // superblock; resuming clears them (what the h5clear tool does).
        hbool_t clear = 1;
        if (H5Pexist(fapl, "clear_status_flags") > 0)
            H5Pset(fapl, "clear_status_flags", &clear);
    }
    if (mode == H5_MEMORY)
        H5Pset_fapl_core(fapl, 1 << 20, 0);
    if (mode == H5_CREATE || mode == H5_MEMORY)
        f->file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    else
        f->file = H5Fopen(path, mode == H5_READ ? H5F_ACC_RDONLY : H5F_ACC_RDWR, fapl);
    H5Pclose(fapl);
    if (f->file < 0) {
        FAIL("%s HDF5 file '%s' failed (missing, unwritable, or not an HDF5 file)",
             mode == H5_CREATE || mode == H5_MEMORY ? "create" : "open", path);
        free(f);
        return -1;
    }
    *out = f;
    return 0;
}

int h5_close(struct h5file *f)
{
    int rc = 0;
    if (!f)
        return 0;
    for (int i = 0; i < f->nseries; i++)
        if (H5Dclose(f->series[i].dset) < 0)
            rc = -1;
    if (H5Fclose(f->file) < 0)
        rc = -1;
    free(f);
    return rc;
}

int h5_flush(struct h5file *f, char *err, size_t errlen)
{
    if (H5Fflush(f->file, H5F_SCOPE_GLOBAL) < 0) {
        FAIL("flush '%s' failed (disk full?)", f->path);
        return -1;
    }
    return 0;
}

int h5_write_image(struct h5file *f, const char *path, char *err, size_t errlen)
{
    if (H5Fflush(f->file, H5F_SCOPE_GLOBAL) < 0) {
        FAIL("build the image of '%s' failed", path);
        return -1;
    }
    // The seal goes in front of the image: HDF5 finds a superblock at offset 512 by itself
    // (h5py and h5dump read the file as it is) and treats what precedes it as a user block.
    ssize_t image = H5Fget_file_image(f->file, NULL, 0);
    ssize_t size = image + H5_SEAL_BYTES;
    unsigned char *buf = image > 0 ? malloc((size_t)size) : NULL;
    if (!buf || H5Fget_file_image(f->file, buf + H5_SEAL_BYTES, (size_t)image) != image) {
        FAIL("build the image of '%s' failed (out of memory?)", path);
        free(buf);
        return -1;
    }
    h5_seal_image(buf, (size_t)size);
    int rc = -1, fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (fd < 0) {
        FAIL("create '%s': %s", path, strerror(errno));
        free(buf);
        return -1;
    }
    size_t done = 0;
    while (done < (size_t)size) {
        ssize_t w = write(fd, buf + done, (size_t)size - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            FAIL("write '%s': %s (disk full?)", path, w < 0 ? strerror(errno) : "short write");
            goto out;
        }
        done += (size_t)w;
    }
    if (fsync(fd) != 0) {
        FAIL("write '%s': %s (disk full?)", path, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (close(fd) != 0 && rc == 0) {
        FAIL("write '%s': %s (disk full?)", path, strerror(errno));
        rc = -1;
    }
    free(buf);
    return rc;
}

int h5_start_swmr(struct h5file *f, char *err, size_t errlen)
{
    if (H5Fstart_swmr_write(f->file) < 0) {
        FAIL("start SWMR writing on '%s' failed", f->path);
        return -1;
    }
    return 0;
}

// Strings are variable-length UTF-8: h5py reads them as str.
static hid_t string_type(void)
{
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    H5Tset_cset(type, H5T_CSET_UTF8);
    return type;
}

// Opens the group or dataset obj; a missing obj becomes a group (with its parents). The caller
// closes it with H5Oclose.
static hid_t object_open(struct h5file *f, const char *obj)
{
    if (strcmp(obj, "/") == 0 || H5Lexists(f->file, obj, H5P_DEFAULT) > 0)
        return H5Oopen(f->file, obj, H5P_DEFAULT);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t g = H5Gcreate2(f->file, obj, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    H5Pclose(lcpl);
    return g;
}

static int attr_write(struct h5file *f, const char *obj, const char *name, hid_t type,
                      const void *value, char *err, size_t errlen)
{
    hid_t g = object_open(f, obj), space = -1, attr = -1;
    int rc = -1;
    if (g < 0) {
        FAIL("create group '%s' in '%s' failed", obj, f->path);
        return -1;
    }
    space = H5Screate(H5S_SCALAR);
    if (H5Aexists(g, name) > 0)
        H5Adelete(g, name);
    attr = H5Acreate2(g, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (attr >= 0 && H5Awrite(attr, type, value) >= 0)
        rc = 0;
    else
        FAIL("write attribute '%s/%s' in '%s' failed", obj, name, f->path);
    if (attr >= 0)
        H5Aclose(attr);
    H5Sclose(space);
    H5Oclose(g);
    return rc;
}

int h5_attr_str(struct h5file *f, const char *obj, const char *name, const char *value, char *err,
                size_t errlen)
{
    hid_t type = string_type();
    int rc = attr_write(f, obj, name, type, &value, err, errlen);
    H5Tclose(type);
    return rc;
}

int h5_attr_f64(struct h5file *f, const char *obj, const char *name, double value, char *err,
                size_t errlen)
{
    return attr_write(f, obj, name, H5T_NATIVE_DOUBLE, &value, err, errlen);
}

int h5_attr_i64(struct h5file *f, const char *obj, const char *name, int64_t value, char *err,
                size_t errlen)
{
    return attr_write(f, obj, name, H5T_NATIVE_INT64, &value, err, errlen);
}

static hid_t attr_open(struct h5file *f, const char *obj, const char *name)
{
    if (H5Aexists_by_name(f->file, obj, name, H5P_DEFAULT) <= 0)
        return -1;
    return H5Aopen_by_name(f->file, obj, name, H5P_DEFAULT, H5P_DEFAULT);
}

int h5_attr_read_i64(struct h5file *f, const char *obj, const char *name, int64_t *value, char *err,
                     size_t errlen)
{
    hid_t a = attr_open(f, obj, name);
    if (a < 0 || H5Aread(a, H5T_NATIVE_INT64, value) < 0) {
        FAIL("read attribute '%s/%s' from '%s' failed", obj, name, f->path);
        if (a >= 0)
            H5Aclose(a);
        return -1;
    }
    H5Aclose(a);
    return 0;
}

int h5_attr_read_str(struct h5file *f, const char *obj, const char *name, char *value, size_t len,
                     char *err, size_t errlen)
{
    hid_t a = attr_open(f, obj, name);
    int rc = -1;
    if (a >= 0) {
        hid_t type = string_type();
        char *s = NULL;
        if (H5Aread(a, type, &s) >= 0 && s) {
            snprintf(value, len, "%s", s);
            H5free_memory(s);
            rc = 0;
        }
        H5Tclose(type);
        H5Aclose(a);
    }
    if (rc != 0)
        FAIL("read attribute '%s/%s' from '%s' failed", obj, name, f->path);
    return rc;
}

// ---- series ----

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
        hid_t stype = string_type(), aspace = H5Screate(H5S_SCALAR);
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
    hid_t type = string_type();
    int rc = series_new(f, path, type, 1, &cur, &max, &chunk, description, series, err, errlen);
    H5Tclose(type);
    return rc;
}

int h5_series_append_str(struct h5file *f, int id, const char *value, char *err, size_t errlen)
{
    struct h5series *s = &f->series[id];
    hsize_t ext = s->rows + 1, start = s->rows, count = 1;
    hid_t type = string_type(), fspace = -1, mspace = -1;
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

// ---- fixed datasets ----

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

int h5_write_f32(struct h5file *f, const char *path, int ndim, const size_t *dims,
                 const float *data, char *err, size_t errlen)
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
    int rc = dataset_write(f, path, H5T_NATIVE_FLOAT, space, dcpl, data, err, errlen);
    H5Pclose(dcpl);
    H5Sclose(space);
    return rc;
}

int h5_read_f32(struct h5file *f, const char *path, float *data, size_t count, int *ndim,
                size_t *dims, char *err, size_t errlen)
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
    if (H5Dread(dset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) {
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

int h5_exists(struct h5file *f, const char *path)
{
    return H5Lexists(f->file, path, H5P_DEFAULT) > 0;
}

int h5_write_strings(struct h5file *f, const char *path, const char *const *strings, int n,
                     char *err, size_t errlen)
{
    hsize_t d = (hsize_t)n;
    hid_t type = string_type();
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

void h5_version(char *out, size_t len)
{
    unsigned maj = 0, min = 0, rel = 0;
    H5get_libversion(&maj, &min, &rel);
    snprintf(out, len, "%u.%u.%u", maj, min, rel);
}
