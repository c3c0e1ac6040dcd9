#!/bin/bash
# The README's first commands, on a Debian 12 that has only what its installer brings (and git):
#   ./workbench.sh demo    sets everything up and starts the workbench on the local cluster
#   ./workbench.sh test    installs what the tests need, then runs the whole suite
# Any other target of the Makefile works too. Run as root (su -, or sudo): it installs packages
# and starts daemons. All it adds itself is `make`; the Makefile and the roles do the rest.
set -euo pipefail
cd "$(dirname "$0")"
if [ "$(id -u)" != 0 ]; then
  echo "Run this as root (su -, or sudo): it installs packages and starts daemons." >&2
  exit 1
fi
if ! command -v make >/dev/null; then
  echo "[workbench] apt-get install make"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends make >/dev/null
fi
exec make "${@:-demo}"
