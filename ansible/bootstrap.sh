#!/bin/bash
# Install what the Ansible roles need to run at all (Ansible itself), and for `make test` the
# browser the tests drive. Everything else is installed by the roles. Debian 12, as root.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "Run this as root (the roles install packages and start daemons)." >&2; exit 1; }
want="ansible-core python3-venv sudo"
[ "${1:-}" = "--test" ] && want="$want chromium"
missing=""
for pkg in $want; do dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"; done
[ -z "$missing" ] && exit 0
echo "[bootstrap] apt-get install$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends $missing >/dev/null
