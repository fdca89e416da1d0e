// HDF5 wrapper: files, the seal of memory-built files, attributes (series: h5_series.c; fixed
// datasets and dimension scales: h5_data.c). Errors: HDF5's own error stack printing is turned off;
// each call checks its return value and reports the operation and object in err.
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

#include "probes/h5_private.h"

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
hid_t h5_string_type(void)
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
    hid_t type = h5_string_type();
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
        hid_t type = h5_string_type();
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

void h5_version(char *out, size_t len)
{
    unsigned maj = 0, min = 0, rel = 0;
    H5get_libversion(&maj, &min, &rel);
    snprintf(out, len, "%u.%u.%u", maj, min, rel);
}
