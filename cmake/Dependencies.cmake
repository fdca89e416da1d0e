# Imported targets for every external dependency (DESIGN.md §1):
#   MPI::MPI_C, canary::blas (OpenBLAS, OpenMP build preferred), canary::inih, canary::cmocka,
#   OpenMP::OpenMP_C, canary::hdf5 (the C library, serial build), canary::sentencepiece,
#   canary::dnnl.
find_package(MPI REQUIRED COMPONENTS C)
find_package(OpenMP REQUIRED COMPONENTS C)
find_package(PkgConfig REQUIRED)

# OpenBLAS: the OpenMP build shares our OpenMP thread pool and runs single-threaded when called
# inside a parallel region (the attention loop relies on that). Fall back to any OpenBLAS.
find_path(CANARY_CBLAS_INCLUDE cblas.h
  PATHS /usr/include/x86_64-linux-gnu/openblas-openmp /usr/include/aarch64-linux-gnu/openblas-openmp
        /usr/include/x86_64-linux-gnu/openblas-pthread /usr/include/aarch64-linux-gnu/openblas-pthread
        /usr/include/openblas /usr/include NO_DEFAULT_PATH)
find_library(CANARY_OPENBLAS_LIB openblas
  PATHS /usr/lib/x86_64-linux-gnu/openblas-openmp /usr/lib/aarch64-linux-gnu/openblas-openmp
        /usr/lib/x86_64-linux-gnu/openblas-pthread /usr/lib/aarch64-linux-gnu/openblas-pthread
  NO_DEFAULT_PATH)
if(NOT CANARY_OPENBLAS_LIB)
  find_library(CANARY_OPENBLAS_LIB openblas REQUIRED)
endif()
if(NOT CANARY_CBLAS_INCLUDE)
  message(FATAL_ERROR "cblas.h not found: install libopenblas-openmp-dev")
endif()
message(STATUS "canary: OpenBLAS ${CANARY_OPENBLAS_LIB}, cblas.h in ${CANARY_CBLAS_INCLUDE}")
add_library(canary::blas INTERFACE IMPORTED)
set_target_properties(canary::blas PROPERTIES
  INTERFACE_INCLUDE_DIRECTORIES "${CANARY_CBLAS_INCLUDE}"
  INTERFACE_LINK_LIBRARIES "${CANARY_OPENBLAS_LIB}")

pkg_check_modules(INIH REQUIRED IMPORTED_TARGET inih)

# SentencePiece (libsentencepiece-dev): the BPE tokenizers, trainer included.
pkg_check_modules(SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)
add_library(canary::sentencepiece ALIAS PkgConfig::SENTENCEPIECE)
add_library(canary::inih ALIAS PkgConfig::INIH)

# oneDNN (libdnnl-dev): the bf16 matmul on AMX / AVX512-BF16 and the onednn matmul backend
# (model/matmul_dnnl.c). Found by path: Debian's CMake config also asks for OpenCL's headers,
# which canary does not use (libdnnl.so links libOpenCL itself).
find_path(CANARY_DNNL_INCLUDE oneapi/dnnl/dnnl.h)
find_library(CANARY_DNNL_LIB dnnl)
if(NOT CANARY_DNNL_INCLUDE OR NOT CANARY_DNNL_LIB)
  message(FATAL_ERROR "oneDNN not found: install libdnnl-dev")
endif()
add_library(canary::dnnl INTERFACE IMPORTED)
set_target_properties(canary::dnnl PROPERTIES
  INTERFACE_INCLUDE_DIRECTORIES "${CANARY_DNNL_INCLUDE}"
  INTERFACE_LINK_LIBRARIES "${CANARY_DNNL_LIB}")

# cmocka 1.1.5 ships no imported target: wrap it once.
find_path(CANARY_CMOCKA_INCLUDE cmocka.h)
find_library(CANARY_CMOCKA_LIB cmocka)
if(CANARY_CMOCKA_INCLUDE AND CANARY_CMOCKA_LIB)
  add_library(canary::cmocka INTERFACE IMPORTED)
  set_target_properties(canary::cmocka PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${CANARY_CMOCKA_INCLUDE}"
    INTERFACE_LINK_LIBRARIES "${CANARY_CMOCKA_LIB}")
endif()

# HDF5: Debian's serial C library through pkg-config (hdf5-serial.pc), else CMake's FindHDF5.
# The high-level library (dimension scales, H5DS) sits beside it.
pkg_check_modules(HDF5 IMPORTED_TARGET hdf5-serial)
add_library(canary::hdf5 INTERFACE IMPORTED)
if(HDF5_FOUND)
  find_library(CANARY_HDF5_HL NAMES hdf5_serial_hl hdf5_hl HINTS ${HDF5_LIBRARY_DIRS} REQUIRED)
  set_target_properties(canary::hdf5 PROPERTIES INTERFACE_LINK_LIBRARIES
    "${CANARY_HDF5_HL};PkgConfig::HDF5")
else()
  find_package(HDF5 REQUIRED COMPONENTS C HL)
  set_target_properties(canary::hdf5 PROPERTIES INTERFACE_LINK_LIBRARIES
    "hdf5::hdf5_hl;hdf5::hdf5")
endif()
