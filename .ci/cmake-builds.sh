#!/usr/bin/env bash
# The C library's CMake build (csrc/CMakeLists.txt), the one an Android or
# iOS app uses, on every target we can reach here (warnings are errors):
#
#   native              shared library, installed, used by a find_package()
#                       consumer; ctest (C tests, forced scalar, example)
#   aarch64, armv7      gcc cross builds; ctest under qemu-user through
#                       CMAKE_CROSSCOMPILING_EMULATOR
#   Android             clang for aarch64-linux-android24 (arm64-v8a) and
#                       armv7a-linux-androideabi24 (armeabi-v7a, NEON on as
#                       in the NDK): the library compiles and its NEON
#                       tables are in it.  There is no NDK here: the headers
#                       are glibc's for the same CPU, so this checks our code
#                       with the NDK's compiler and target, not bionic.
#
# Needs (installed by .ci/run): cmake, clang, llvm, the aarch64 and armhf
# cross compilers, qemu-user-static.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC="$(pwd)/csrc"

BUILD="${DRE_CMAKE_BUILD:-}"
if [ -z "$BUILD" ]; then
    BUILD="$(mktemp -d "${TMPDIR:-/tmp}/deeprec-edge-cmake.XXXXXX")"
    trap 'rm -rf "$BUILD"' EXIT
fi
step() { printf '\n---- %s ----\n' "$*"; }
configure() { cmake -S "$SRC" -B "$@" -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_FLAGS=-Werror > /dev/null; }
build() { cmake --build "$1" -j 2 -- --no-print-directory | grep -Ev '^\[ *[0-9]+%\] (Building|Linking)' || true; }
run_ctest() { (cd "$1" && ctest --output-on-failure | tail -4); }

step "native ($(cmake --version | head -1)): shared library, install, find_package consumer"
configure "$BUILD/native" -DBUILD_SHARED_LIBS=ON -DCMAKE_INSTALL_PREFIX="$BUILD/prefix"
build "$BUILD/native"
run_ctest "$BUILD/native"
cmake --install "$BUILD/native" > /dev/null
mkdir -p "$BUILD/consumer"
cat > "$BUILD/consumer/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.18)
project(consumer C)
find_package(deeprec_edge 0.1 REQUIRED)
add_executable(consumer main.c)
target_link_libraries(consumer PRIVATE deeprec_edge::deeprec_edge)
EOF
cat > "$BUILD/consumer/main.c" <<'EOF'
#include <deeprec_edge.h>
#include <stdio.h>
int main(void) {
    printf("consumer: deeprec-edge %d.%d.%d, kernel path %s\n", DRE_VERSION_MAJOR,
           DRE_VERSION_MINOR, DRE_VERSION_PATCH, dre_path_name(dre_active_path()));
    return dre_path_supported(dre_active_path()) ? 0 : 1;
}
EOF
cmake -S "$BUILD/consumer" -B "$BUILD/consumer/build" -DCMAKE_PREFIX_PATH="$BUILD/prefix" \
    -DCMAKE_BUILD_RPATH="$BUILD/prefix/lib" > /dev/null
build "$BUILD/consumer/build"
"$BUILD/consumer/build/consumer"

for t in aarch64-linux-gnu:aarch64:qemu-aarch64-static arm-linux-gnueabihf:arm:qemu-arm-static; do
    IFS=: read -r triple proc emu <<< "$t"
    step "$triple (gcc cross, static), ctest under $emu"
    configure "$BUILD/$triple" -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR="$proc" \
        -DCMAKE_C_COMPILER="$triple-gcc" -DCMAKE_EXE_LINKER_FLAGS=-static \
        -DCMAKE_CROSSCOMPILING_EMULATOR="$emu"
    build "$BUILD/$triple"
    run_ctest "$BUILD/$triple"
done

# glibc's armhf headers expect the hard-float ABI; the NDK's armeabi-v7a is
# softfp, whose stub header glibc does not ship: an empty one stands in.
mkdir -p "$BUILD/softfp-shim/gnu"
: > "$BUILD/softfp-shim/gnu/stubs-soft.h"
for t in "aarch64-linux-android24|aarch64-linux-gnu|" \
         "armv7a-linux-androideabi24|arm-linux-gnueabihf|-mfpu=neon -mfloat-abi=softfp -mthumb -isystem $BUILD/softfp-shim"; do
    IFS='|' read -r triple glibc flags <<< "$t"
    step "Android $triple (clang $(clang -dumpversion), static library)"
    cmake -S "$SRC" -B "$BUILD/$triple" -DCMAKE_BUILD_TYPE=Release -DCMAKE_SYSTEM_NAME=Linux \
        -DCMAKE_C_COMPILER=clang -DCMAKE_C_COMPILER_TARGET="$triple" -DCMAKE_AR="$(command -v llvm-ar)" \
        -DCMAKE_TRY_COMPILE_TARGET_TYPE=STATIC_LIBRARY -DDRE_BUILD_TESTS=OFF \
        -DCMAKE_C_FLAGS="-Werror $flags -isystem /usr/$glibc/include" > /dev/null
    build "$BUILD/$triple"
    syms=$(llvm-nm "$BUILD/$triple/libdeeprec_edge.a" 2>/dev/null)
    machine=$(llvm-readelf -h "$BUILD/$triple/libdeeprec_edge.a" | awk -F: '/Machine/ && !seen {gsub(/^ +/, "", $2); print $2; seen = 1}')
    grep -q 'dre__neon' <<< "$syms" || { echo "error: $triple: no NEON kernel table in the library" >&2; exit 1; }
    echo "$triple: $machine objects, NEON tables: $(grep -o 'dre__neon[a-z0-9_]*table' <<< "$syms" | sort -u | tr '\n' ' ')"
done

echo
echo "CMake builds: all passed"
