#!/bin/bash
# tools/xarch/rootfs.sh [ARCH...]   (Debian names: arm64 armhf s390x; default: all three)
#
# Builds a minimal Debian bookworm root file system per ARCH under $AMBROSIA_XARCH_DIR (default
# /var/tmp/ambrosia-xarch), with python3 and the project's dependencies as a board would get them
# from PyPI (armhf and s390x: cbor2's pure-Python 5.9, no crc32c wheel), to be run through
# qemu-user. Needs root, apt, debootstrap and network access to Debian and PyPI; about three
# minutes per architecture on two cores. Idempotent. tools/xarch/run.sh runs Python there.
set -euo pipefail
dir=$(realpath -m "${AMBROSIA_XARCH_DIR:-/var/tmp/ambrosia-xarch}")
[ $# -gt 0 ] || set -- arm64 armhf s390x
if ! command -v debootstrap >/dev/null || ! command -v qemu-aarch64-static >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    qemu-user-static binfmt-support debootstrap >/dev/null
fi
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
for arch in "$@"; do
  case $arch in
    arm64) qemu=aarch64 platform=manylinux_2_17_aarch64 ;;
    armhf) qemu=arm platform=linux_armv7l ;;
    s390x) qemu=s390x platform=manylinux_2_17_s390x ;;
    *) echo "unknown architecture $arch (arm64, armhf or s390x)" >&2; exit 2 ;;
  esac
  [ -e "/proc/sys/fs/binfmt_misc/qemu-$qemu" ] || update-binfmts --enable "qemu-$qemu"
  root=$dir/$arch
  if [ ! -e "$root/.ready" ]; then
    mkdir -p "$root"
    debootstrap --arch="$arch" --variant=minbase --include=python3 bookworm "$root" \
      http://deb.debian.org/debian > "$dir/debootstrap-$arch.log" 2>&1
    touch "$root/.ready"
  fi
  # the dependencies, as pip on the board picks them (wheels only: no compiler there)
  site=$root/usr/local/lib/python3.11/dist-packages
  mkdir -p "$site"
  python3 -m pip install --quiet --no-deps --only-binary=:all: --upgrade --target "$site" \
    --python-version 3.11 --platform "$platform" --platform any \
    cbor2 anyio sniffio idna typing_extensions platformdirs
  echo "$arch: $(tools/xarch/run.sh "$arch" -c 'import platform, sys; print(platform.machine(), sys.byteorder, 8 * __import__("struct").calcsize("P"), "bit")')"
done
