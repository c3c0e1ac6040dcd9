#!/bin/bash
# pyprefix.sh ROOT PREFIX VERSION FROM — a site's Python build in a prefix of its own inside the
# site's root: Debian's pythonX.Y packages (FROM=host: this host's archive and architecture;
# FROM=root: the root's own release and architecture), unpacked, not installed, so that nothing
# of it is on the root's default PATH; PREFIX/bin/python3 is what the site's module puts on PATH.
# Prints CHANGED when it unpacked.
set -euo pipefail
ROOT=$1 PREFIX=$2 VERSION=$3 FROM=$4
target=$ROOT$PREFIX
stamp=$target/.aifa-prefix   # written last: a prefix without it is remade
[ -f "$stamp" ] && exit 0
packages="python$VERSION-minimal libpython$VERSION-minimal libpython$VERSION-stdlib python$VERSION"
debs=$(mktemp -d)
trap 'rm -rf "$debs"' EXIT
if [ "$FROM" = host ]; then
  (cd "$debs" && chown _apt "$debs" 2>/dev/null; apt-get download -q $packages >/dev/null)
else
  mkdir -p "$ROOT/var/tmp/aifa-debs"
  chroot "$ROOT" sh -c "cd /var/tmp/aifa-debs && apt-get download -q $packages >/dev/null"
  mv "$ROOT"/var/tmp/aifa-debs/*.deb "$debs"/ && rmdir "$ROOT/var/tmp/aifa-debs"
fi
rm -rf "$target.new" "$debs/tree" && mkdir -p "$target.new" "$debs/tree"
for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$debs/tree"; done
# the packages' usr/ is the prefix: CPython finds its library (PREFIX/lib/pythonX.Y) from its
# executable's place, and a venv made by it from the folder of PREFIX/bin/python3
mv "$debs"/tree/usr/* "$target.new"/
ln -s "python$VERSION" "$target.new/bin/python3"
# a link into the packages' /etc, which points nowhere in the root
rm -f "$target.new/lib/python$VERSION/sitecustomize.py"
# it runs from its prefix (CPython finds its library next to its executable)
chroot "$ROOT" "$PREFIX.new/bin/python3" -c 'import ssl, sqlite3, ctypes, venv' ||
  { echo "pyprefix: Python $VERSION in $PREFIX does not run in $ROOT" >&2; exit 1; }
# byte-compiled once, as Debian's postinst (py3compile) and a site's EasyBuild do: users cannot
# write here, and without it every start compiles the library again (22 s of imports against
# 3.8 s on the emulated JUPITER)
chroot "$ROOT" "$PREFIX.new/bin/python3" -m compileall -q -j0 "$PREFIX.new/lib" >/dev/null ||
  { echo "pyprefix: Python $VERSION in $PREFIX cannot compile its library" >&2; exit 1; }
rm -rf "$target" && mv "$target.new" "$target"
echo "$VERSION $FROM" > "$stamp"
echo CHANGED
