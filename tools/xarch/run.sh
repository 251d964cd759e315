#!/bin/bash
# tools/xarch/run.sh ARCH [PYTHON ARGS...]   run python3 of a root made by tools/xarch/rootfs.sh
#
# The repository is mounted at the same path inside, in a mount namespace of its own (nothing
# stays mounted), and PYTHONPATH points at the package installed from it into a scratch
# directory, so scripts and paths under the repository work as they do on the host.
set -euo pipefail
dir=$(realpath -m "${AMBROSIA_XARCH_DIR:-/var/tmp/ambrosia-xarch}")
arch=${1:?usage: tools/xarch/run.sh ARCH [PYTHON ARGS...]}; shift
root=$dir/$arch
[ -e "$root/.ready" ] || { echo "no root for $arch in $dir: run tools/xarch/rootfs.sh $arch" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/../.." && pwd -P)
package=$repo/.xarch-package
if [ ! -e "$package/ambrosia_edge/__init__.py" ] || [ -n "$(find "$repo/ambrosia_edge" "$repo/storage" "$repo/transports" "$repo/devices" -newer "$package/ambrosia_edge/__init__.py" -name '*.py' -print -quit)" ]; then
  rm -rf "$package"
  python3 -m pip install --quiet --no-deps --target "$package" "$repo" 2>/dev/null
fi
here=$(pwd -P)
exec unshare --mount --propagation private /bin/bash -euc '
root=$1 repo=$2 here=$3 package=$4; shift 4
for d in "$repo" "$here"; do mkdir -p "$root$d"; mount --bind "$d" "$root$d"; done
mount -t proc proc "$root/proc"
exec chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 PATH=/usr/local/bin:/usr/bin:/bin \
  PYTHONPATH="$package" /bin/sh -c "cd \"\$0\" && exec python3 \"\$@\"" "$here" "$@"
' run "$root" "$repo" "$here" "$package" "$@"
