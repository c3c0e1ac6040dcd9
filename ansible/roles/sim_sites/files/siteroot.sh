#!/bin/bash
# siteroot.sh ROOT RECIPE_FILE — the userland of a simulated site: a Debian root of its own
# release and architecture (debootstrap), not the hub host's. RECIPE_FILE (written by the
# sim_sites role) says SUITE, ARCH, MIRROR, PACKAGES (of the root's architecture) and
# NATIVE_PACKAGES (the site's Slurm: amd64 on every site, added as a foreign
# architecture where the root is not amd64, so that they run natively while jobs, login shells
# and Python run the site's own binaries, emulated by qemu-user-static through binfmt_misc).
# Rebuilt only when the recipe changed (its digest is kept in ROOT/.aifa-recipe); the site's data
# (homes, projects, software) lives outside the root and survives a rebuild. Prints CHANGED when
# it built.
set -euo pipefail
ROOT=${1:?usage: siteroot.sh ROOT RECIPE_FILE}
RECIPE=${2:?usage: siteroot.sh ROOT RECIPE_FILE}
# shellcheck disable=SC1090
. "$RECIPE"
digest=$(sha256sum <"$RECIPE" | cut -c1-16)
[ "$(cat "$ROOT/.aifa-recipe" 2>/dev/null)" = "$digest" ] && exit 0

if [ "$ARCH" != amd64 ]; then
  [ -e "/proc/sys/fs/binfmt_misc/qemu-$(case $ARCH in arm64) echo aarch64 ;; *) echo "$ARCH" ;; esac)" ] || {
    echo "siteroot: no binfmt_misc handler for $ARCH (qemu-user-static, binfmt-support)" >&2; exit 1; }
fi
new=$ROOT.new
rm -rf "$new"
debootstrap --arch="$ARCH" --variant=minbase --include="$(tr ' ' , <<<"$PACKAGES")" "$SUITE" "$new" "$MIRROR" >"$ROOT.build.log" 2>&1 ||
  { echo "siteroot: debootstrap failed, see $ROOT.build.log" >&2; exit 1; }
# no daemon starts inside the root while packages are installed
printf '#!/bin/sh\nexit 101\n' >"$new/usr/sbin/policy-rc.d"; chmod 0755 "$new/usr/sbin/policy-rc.d"
in_root() { chroot "$new" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"; }
daemons=${NATIVE_PACKAGES:-}
if [ -n "$daemons" ] && [ "$ARCH" != amd64 ]; then
  in_root dpkg --add-architecture amd64
  daemons=$(for p in $NATIVE_PACKAGES; do printf '%s:amd64 ' "$p"; done)
fi
if [ -n "$daemons" ]; then
  { in_root apt-get update -q && in_root apt-get install -y -q --no-install-recommends $daemons; } \
    >>"$ROOT.build.log" 2>&1 || { echo "siteroot: installing $daemons failed, see $ROOT.build.log" >&2; exit 1; }
fi
in_root apt-get clean
echo "$digest" >"$new/.aifa-recipe"
rm -rf "$ROOT.old"
[ ! -e "$ROOT" ] || mv "$ROOT" "$ROOT.old"
mv "$new" "$ROOT"
rm -rf "$ROOT.old"
echo CHANGED
