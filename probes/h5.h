// provides: a small HDF5 wrapper — the only code in canary that includes <hdf5.h>.
//
// What canary needs and nothing more: files (create / open, flush, SWMR so h5py can read a live
// run), attributes on groups, extendible row series for probes ([rows, d1, d2] float64, chunked,
// aligned by row), and fixed float32 datasets with Fletcher32 checksums for checkpoints.
// Every function returns 0 or -1 with a message in err naming the operation and the object.
#ifndef CANARY_PROBES_H5_H
#define CANARY_PROBES_H5_H

#include <stddef.h>
#include <stdint.h>

struct h5file; // opaque

// H5_MEMORY: a file built in memory (HDF5's core driver, no backing store), written out with
// h5_write_image — HDF5 then never writes to disk itself, so a full disk is a plain write error.
// Such a file is sealed: H5_SEAL_BYTES in front of the HDF5 image (a user block to any HDF5
// reader) hold a magic, the file size and a 64-bit hash of the rest. H5_SEALED reads a sealed file
// whole into memory, checks the seal, and only then lets HDF5 parse it (read-only, from memory): a
// truncated, damaged or hostile file is refused before it reaches the HDF5 parser.
enum h5_mode { H5_CREATE, H5_READ, H5_READWRITE, H5_MEMORY, H5_SEALED };
#define H5_SEAL_BYTES 512

int h5_open(struct h5file **f, const char *path, enum h5_mode mode, char *err, size_t errlen);
// Closes and frees f (NULL is fine). Returns -1 if the close failed (data may be lost).
int h5_close(struct h5file *f);
int h5_flush(struct h5file *f, char *err, size_t errlen);
// Writes the image of an H5_MEMORY file to path (created or truncated), with fsync. Returns 0 or
// -1 with err; a failed write leaves a partial file at path for the caller to remove.
int h5_write_image(struct h5file *f, const char *path, char *err, size_t errlen);
// The seal itself, for tests and fuzzing: writes it into image[0, H5_SEAL_BYTES) (size ≥
// H5_SEAL_BYTES); checks it (0, or -1 with the reason in err).
void h5_seal_image(unsigned char *image, size_t size);
int h5_seal_check(const unsigned char *image, size_t size, char *err, size_t errlen);

// Switches a file opened for writing to single-writer/multiple-reader mode: from now on readers
// (h5py with swmr=True) see every flushed row. No dataset may be created afterwards.
int h5_start_swmr(struct h5file *f, char *err, size_t errlen);

// Attributes on a group or dataset (a missing obj becomes a group, with its parents), e.g.
// obj = "/provenance".
int h5_attr_str(struct h5file *f, const char *obj, const char *name, const char *value, char *err,
                size_t errlen);
int h5_attr_f64(struct h5file *f, const char *obj, const char *name, double value, char *err,
                size_t errlen);
int h5_attr_i64(struct h5file *f, const char *obj, const char *name, int64_t value, char *err,
                size_t errlen);
// Reads an attribute back (for resume checks); returns -1 when missing.
int h5_attr_read_i64(struct h5file *f, const char *obj, const char *name, int64_t *value, char *err,
                     size_t errlen);
int h5_attr_read_str(struct h5file *f, const char *obj, const char *name, char *value, size_t len,
                     char *err, size_t errlen);

// A fixed int32 dataset (axis labels, tensor shapes).
int h5_write_i32(struct h5file *f, const char *path, int ndim, const size_t *dims,
                 const int32_t *data, char *err, size_t errlen);

// ---- dimension scales (HDF5's H5DS: generic readers such as h5py and xarray see the axes) ----
// Makes the 1-D dataset at path a dimension scale called name.
int h5_dim_scale(struct h5file *f, const char *path, const char *name, char *err, size_t errlen);
// Attaches the scale at `scale` to dimension dim of the dataset at path. Before h5_start_swmr.
int h5_dim_attach(struct h5file *f, const char *path, int dim, const char *scale, char *err,
                  size_t errlen);

// ---- row series ----
// An extendible float64 dataset of rows of shape dims[0..ndim) (ndim 0 = scalar rows), with a
// "description" attribute. Returns a handle index ≥ 0 through *series.
int h5_series_create(struct h5file *f, const char *path, int ndim, const int *dims,
                     const char *description, int *series, char *err, size_t errlen);
// A series of variable-length UTF-8 strings (the text columns of /events).
int h5_series_create_str(struct h5file *f, const char *path, const char *description, int *series,
                         char *err, size_t errlen);
int h5_series_append_str(struct h5file *f, int series, const char *value, char *err, size_t errlen);
// Opens an existing series (resume).
int h5_series_open(struct h5file *f, const char *path, int *series, char *err, size_t errlen);
// Appends one row (prod(dims) values).
int h5_series_append(struct h5file *f, int series, const double *row, char *err, size_t errlen);
// Rows in the series.
long h5_series_rows(struct h5file *f, int series);
// Drops rows beyond `rows` (resume: no duplicated steps). Not allowed in SWMR mode.
int h5_series_truncate(struct h5file *f, int series, long rows, char *err, size_t errlen);
// Reads row `row` into out (prod(dims) values).
int h5_series_read_row(struct h5file *f, int series, long row, double *out, char *err,
                       size_t errlen);

// ---- fixed datasets (checkpoints) ----
// float32 data of the given shape, chunked with the Fletcher32 checksum filter.
int h5_write_f32(struct h5file *f, const char *path, int ndim, const size_t *dims,
                 const float *data, char *err, size_t errlen);
// Reads a float32 dataset that must hold exactly count values; its shape goes to dims[0..*ndim).
// A checksum mismatch is an error.
int h5_read_f32(struct h5file *f, const char *path, float *data, size_t count, int *ndim,
                size_t *dims, char *err, size_t errlen);
// float64 counterparts (exact doubles: the update guards' windows).
int h5_write_f64(struct h5file *f, const char *path, int ndim, const size_t *dims,
                 const double *data, char *err, size_t errlen);
int h5_read_f64(struct h5file *f, const char *path, double *data, size_t count, int *ndim,
                size_t *dims, char *err, size_t errlen);
// 1 when the file has an object (dataset or group) at path, else 0.
int h5_exists(struct h5file *f, const char *path);
// A list of strings as a variable-length string dataset (e.g. /tensors/names).
int h5_write_strings(struct h5file *f, const char *path, const char *const *strings, int n,
                     char *err, size_t errlen);

// The HDF5 library version, for provenance.
void h5_version(char *out, size_t len);

#endif
