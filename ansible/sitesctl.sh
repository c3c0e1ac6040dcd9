#!/bin/bash
# sitesctl.sh status|down|authorize-demo: look at or stop the simulated sites that `make sites`
# started; authorize-demo plays each site's portal for the demo hub: every demo user's key (made
# by the hub) is given to their account on each simulated site.
set -uo pipefail
ROOT=/var/lib/aifa-sites
SETTINGS=$ROOT/workbench-sites.yaml
VENV=/opt/aifa-workbench/venv
if [ "${1:-}" = authorize-demo ]; then
  "$VENV/bin/python" -c '
import sys, yaml
for user, sites in (yaml.safe_load(open(sys.argv[1])).get("site_users") or {}).items():
    for site, who in sites.items():
        print(user, site, who["username"])' "$SETTINGS" |
  while read -r user site site_user; do
    runuser -u aifa-hub -- env AIFA_WORKBENCH_SETTINGS="$SETTINGS" "$VENV/bin/aifa-workbench" user-key "$user" "$site" |
      /usr/local/sbin/aifa-simsite authorize "$ROOT/$site" "$site_user" || exit 1
  done
  exit 0
fi
rc=0
for env in "$ROOT"/*/site.env; do
  [ -e "$env" ] || { echo "no simulated sites here (make sites starts them)"; exit 3; }
  /usr/local/sbin/aifa-simsite "${1:-status}" "$(dirname "$env")" || rc=$?
done
exit $rc
