# Sourced by ./tests/run, ./launch/demo and bench/run: installs the Debian packages canary needs
# when they are missing (apt-get update once, then apt-get install -y), as root or through sudo.
#
#   canary_ensure_packages PKG...   install whichever of PKG are not installed yet

canary_build_packages="cmake make gcc g++ pkg-config libsentencepiece-dev libdnnl-dev libopenblas-openmp-dev libopenmpi-dev openmpi-bin
libcmocka-dev libinih-dev libhdf5-dev"
# libopenblas0-pthread: the pthread-build test runs canary on it (LD_LIBRARY_PATH); canary itself
# links the OpenMP build by path
canary_test_packages="iproute2 util-linux python3 python3-pytest python3-numpy python3-h5py python3-matplotlib python3-pandas python3-xarray python3-venv python3-pip python3-setuptools python3-wheel python3-torch clang-format git libopenblas0-pthread"
# the sanitizer, valgrind and fuzzing passes of ./tests/run (libFuzzer comes with clang's runtime)
canary_hardening_packages="clang libclang-rt-dev libomp-dev valgrind"
canary_corpus_packages="nodejs npm ca-certificates"
canary_bench_packages="python3 python3-torch python3-numpy"
canary_analysis_packages="python3 python3-numpy python3-h5py python3-matplotlib python3-pandas python3-xarray"

canary_ensure_packages() {
    local missing=() pkg sudo=""
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$pkg")
        fi
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo="sudo"
        else
            echo "canary: missing Debian packages: ${missing[*]}" >&2
            echo "canary: install them as root: apt-get install -y ${missing[*]}" >&2
            return 1
        fi
    fi
    echo "canary: installing ${missing[*]}" >&2
    if [ -z "${CANARY_APT_UPDATED:-}" ]; then
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || return 1
        export CANARY_APT_UPDATED=1
    fi
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}" >&2 || return 1
}

# Configures and builds canary into build/ (warnings are errors). Extra cmake arguments pass through.
canary_build() {
    canary_build_in build -DCMAKE_BUILD_TYPE=Release "$@"
}

# The same into another directory: canary_build_in DIR [cmake arguments...]
canary_build_in() {
    local dir=$1
    shift
    cmake -S . -B "$dir" -DCANARY_WERROR=ON "$@" >/dev/null || return 1
    cmake --build "$dir" -j"$(nproc)" -- --no-print-directory >/dev/null || {
        cmake --build "$dir" -j1 2>&1 | grep -E 'error|warning' >&2
        return 1
    }
}
