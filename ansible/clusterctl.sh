#!/bin/bash
# clusterctl.sh status|down: look at or stop the local Slurm cluster the roles started
# (daemons by PID file, never by name; running jobs are cancelled first unless KEEP_JOBS=1).
set -uo pipefail
ROOT=/var/lib/aifa-slurm
PIDS=("slurmd:$ROOT/run/slurmd.pid" "slurmctld:$ROOT/run/slurmctld.pid" "slurmdbd:$ROOT/run/slurmdbd.pid"
      "mariadbd:$ROOT/mariadb/run/mysqld.pid" "munged:/run/munge/munged.pid")
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
case "${1:-status}" in
  status)
    for entry in "${PIDS[@]}"; do
      name=${entry%%:*} pf=${entry#*:}
      if alive "$pf"; then echo "$name: running (pid $(cat "$pf"))"; else echo "$name: not running"; fi
    done
    scontrol ping 2>/dev/null | head -1
    sinfo -o '%10P %5a %6D %5c %8m %8G %t' 2>/dev/null ;;
  down)
    if alive "$ROOT/run/slurmctld.pid" && [ "${KEEP_JOBS:-0}" != 1 ]; then
      ids=$(squeue -h -o %i 2>/dev/null); [ -n "$ids" ] && { echo "cancelling jobs: $ids"; scancel $ids; sleep 2; }
    fi
    for entry in "${PIDS[@]}"; do
      name=${entry%%:*} pf=${entry#*:}
      alive "$pf" || continue
      pid=$(cat "$pf"); kill "$pid"
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
      echo "$name stopped"
    done ;;
  *) echo "usage: $0 status|down" >&2; exit 2 ;;
esac
