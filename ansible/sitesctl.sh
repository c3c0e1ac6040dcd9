#!/bin/bash
# sitesctl.sh status|down: look at or stop the simulated sites that `make sites` started.
set -uo pipefail
ROOT=/var/lib/aifa-sites
rc=0
for env in "$ROOT"/*/site.env; do
  [ -e "$env" ] || { echo "no simulated sites here (make sites starts them)"; exit 3; }
  /usr/local/sbin/aifa-simsite "${1:-status}" "$(dirname "$env")" || rc=$?
done
exit $rc
