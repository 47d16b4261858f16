#!/usr/bin/env bash
# Packs the build dependencies the device machine lacks into .gpu-deps/ (git-ignored through
# .git/info/exclude), so a device run can carry it: `run(carry=[".gpu-deps"], ...)`.
# The device image has nvcc, cmake and ninja but no nlohmann-json, CLI11, GoogleTest or
# cpp-httplib; scripts/gpu-check.sh finds them here (headers + CMake package files, GoogleTest
# sources, and cpp-httplib under .gpu-deps/httplib for CMake's GRETA_HTTPLIB_ROOT).
#
# cpp-httplib: Debian's libcpp-httplib-dev is a compiled library (the header declares, the .so
# implements) built with OpenSSL, zlib and brotli support. Those feature defines change its
# classes' layout, so greta must compile with the same defines -- which makes httplib.h include
# the OpenSSL/zlib/brotli headers -- and the .so needs those libraries at run time. A CUDA image
# need not have any of them, so all of it travels: headers, the .so, and the shared libraries it
# needs, each under its soname. Regular files only (no symlinks), so the copy cannot dangle.
set -euo pipefail
cd "$(dirname "$0")/.."
# In a worktree .git is a file: ask git where the (shared) exclude file is.
exclude=$(git rev-parse --git-path info/exclude)
grep -qx '/.gpu-deps/' "$exclude" 2>/dev/null || echo '/.gpu-deps/' >> "$exclude"
rm -rf .gpu-deps
mkdir -p .gpu-deps/include .gpu-deps/share/cmake
cp -r /usr/include/nlohmann .gpu-deps/include/
cp -r /usr/include/CLI .gpu-deps/include/
cp -r /usr/share/cmake/nlohmann_json /usr/share/cmake/CLI11 .gpu-deps/share/cmake/
cp -r /usr/src/googletest .gpu-deps/googletest

H=.gpu-deps/httplib
mkdir -p "$H/include/openssl" "$H/include/brotli" "$H/lib"
pkg-config --exists cpp-httplib || { echo "gpu-deps: cpp-httplib not found (apt-get install libcpp-httplib-dev)" >&2; exit 1; }
inc=$(pkg-config --variable=includedir cpp-httplib)
libdir=$(pkg-config --variable=libdir cpp-httplib)
cp "$inc/httplib.h" "$H/include/"
# The -D flags the library was built with, one a line, for CMake (see GRETA_HTTPLIB_ROOT).
pkg-config --cflags-only-other cpp-httplib | tr ' ' '\n' | sed -n 's/^-D//p' > "$H/defines.txt"
multiarch=$(gcc -print-multiarch)
cp /usr/include/openssl/*.h "$H/include/openssl/"
# The multiarch folder comes first in the compiler's search path, so its headers win.
if [ -d "/usr/include/$multiarch/openssl" ]; then cp /usr/include/"$multiarch"/openssl/*.h "$H/include/openssl/"; fi
cp /usr/include/zlib.h "$H/include/"
cp /usr/include/zconf.h "$H/include/" 2>/dev/null || cp /usr/include/"$multiarch"/zconf.h "$H/include/"
cp /usr/include/brotli/*.h "$H/include/brotli/"

so=$(readlink -f "$libdir/libcpp-httplib.so")
soname=$(objdump -p "$so" | awk '$1 == "SONAME" {print $2}')
cp "$so" "$H/lib/$soname"
cp "$so" "$H/lib/libcpp-httplib.so"  # the link-time name
# The libraries it needs, and theirs in turn (brotlidec -> brotlicommon, ssl -> crypto), except
# the C/C++ runtime every machine has (the device's is newer than this one's).
needs() {
  objdump -p "$1" | awk '$1 == "NEEDED" {print $2}' | grep -vE '^(libc|libm|libstdc\+\+|libgcc_s|ld-linux.*)\.so' || true
}
queue=$(needs "$so")
while [ -n "$queue" ]; do
  next=""
  for need in $queue; do
    [ -f "$H/lib/$need" ] && continue
    path=$(ldconfig -p | awk -v n="$need" '$1 == n && /x86-64/ {print $NF; exit}')
    [ -n "$path" ] || { echo "gpu-deps: $need (needed by cpp-httplib) not found" >&2; exit 1; }
    cp -L "$path" "$H/lib/$need"
    next="$next $(needs "$path")"
  done
  queue=$(echo $next)
done
echo "gpu-deps: cpp-httplib $(pkg-config --modversion cpp-httplib) with $(ls "$H/lib" | tr '\n' ' ')"
du -sh .gpu-deps
