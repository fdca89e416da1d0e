// provides: the HDF5 wrapper's internals shared by h5.c, h5_series.c and h5_data.c (the only
//           files that include <hdf5.h>). Private to them.
#ifndef CANARY_PROBES_H5_PRIVATE_H
#define CANARY_PROBES_H5_PRIVATE_H

#include <hdf5.h>
#include <stdio.h>

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

// A variable-length UTF-8 string type (the caller closes it).
hid_t h5_string_type(void);

#endif
