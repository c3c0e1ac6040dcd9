#!/bin/bash
# simsite.sh up|status|down SITE_DIR — one simulated site: a network namespace holding its own
# Slurm controller, compute node and login node (sshd), each in a UTS namespace with the site's
# host name and a mount namespace where the hub host's own paths do not exist.
# SITE_DIR/site.env (written by the sim_sites role) says NAME, NS, INDEX, CONTROLLER, NODE, LOGIN,
# HIDDEN_PATHS, HOME_PATTERN. Daemons are found by PID file, never by name. Idempotent.
# `authorize SITE_DIR SITE_USER` (public key on stdin) plays the site's portal: the key is added
# to that user's authorized_keys on the site.
set -euo pipefail
action=${1:?usage: simsite.sh up|status|down SITE_DIR}
DIR=${2:?usage: simsite.sh up|status|down SITE_DIR}
# shellcheck disable=SC1091
. "$DIR/site.env"
HOST_IP=10.77.$INDEX.1
SITE_IP=10.77.$INDEX.2

# A PID file is trusted only if its process lives in this site's network namespace (a PID
# reused after a reboot, or one a daemon's user wrote, names no process of the site).
alive() {
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1")
  case "$pid" in ''|*[!0-9]*) return 1 ;; esac
  kill -0 "$pid" 2>/dev/null && [ "$(ip netns identify "$pid" 2>/dev/null)" = "$NS" ]
}
in_site() { ip netns exec "$NS" "$@"; }
ns_exists() { [ -e "/run/netns/$NS" ]; }
# output_has TEXT COMMAND...: whether COMMAND prints TEXT. Not `COMMAND | grep -q` here: under
# pipefail that fails when grep exits before COMMAND has written all (SIGPIPE), at random.
output_has() { local text=$1 out; shift; out=$("$@" 2>/dev/null) || return 1; grep -qF -- "$text" <<<"$out"; }

network_up() {
  ns_exists || ip netns add "$NS"
  if ! ip link show "$NS" >/dev/null 2>&1; then
    ip link add "$NS" type veth peer name eth0 netns "$NS"
  fi
  output_has "inet $HOST_IP/" ip addr show dev "$NS" || ip addr add "$HOST_IP/24" dev "$NS"
  ip link set "$NS" up
  in_site ip link set lo up
  output_has "inet $SITE_IP/" in_site ip addr show eth0 || in_site ip addr add "$SITE_IP/24" dev eth0
  in_site ip link set eth0 up
  output_has default in_site ip route show default || in_site ip route add default via "$HOST_IP"
  if [ -n "${FABRIC:-}" ]; then
    # a veth pair inside the namespace (the kernel here may have no dummy devices)
    in_site ip link show "$FABRIC" >/dev/null 2>&1 || in_site ip link add "$FABRIC" type veth peer name "${FABRIC}-peer"
    output_has "inet $FABRIC_IP/" in_site ip addr show "$FABRIC" || in_site ip addr add "$FABRIC_IP/24" dev "$FABRIC"
    in_site ip link set "${FABRIC}-peer" up
    in_site ip link set "$FABRIC" up
  fi
}

# A closed site (REACH=reverse: LUMI; forward: JUPITER, Lucia) lets in only its login node's sshd,
# and slurmdbd's calls to the controller (the one accounting daemon of the host serves every
# simulated cluster); its nodes dial out only to OPEN_OUT (slurmdbd; for LUMI the hub's tunnel
# gateway and public URL too).
# An open site (direct) has no rules. Traffic inside the site (node, login, controller) is not
# on eth0 and never filtered. One nft transaction: the table is replaced whole.
firewall_up() {
  local out_rules="" target
  in_site nft -f - <<<"table inet aifa_site {}
delete table inet aifa_site"
  [ "$REACH" = direct ] && return 0
  for target in $OPEN_OUT; do
    out_rules+="    oifname \"eth0\" ip daddr ${target%:*} tcp dport ${target##*:} accept
"
  done
  in_site nft -f - <<NFT
table inet aifa_site {
  chain in {
    type filter hook input priority 0; policy accept;
    iifname "eth0" ct state established,related accept
    iifname "eth0" tcp dport 22 accept
    iifname "eth0" ip saddr $HOST_IP tcp dport 6817 accept
    iifname "eth0" drop
  }
  chain out {
    type filter hook output priority 0; policy accept;
    oifname "eth0" ct state established,related accept
$out_rules    oifname "eth0" drop
  }
}
NFT
}

# Run a daemon as host HOSTNAME of the site: own UTS and mount namespaces, the hub host's paths
# covered by empty tmpfs, and a cgroup mount slurmd 22.05 accepts (ip netns exec remounts /sys).
start_as() {
  local hostname=$1; shift
  in_site unshare --uts --mount --propagation private /bin/sh -c '
    set -e
    hostname "$0"
    for p in $HIDDEN_PATHS; do [ -d "$p" ] && mount -t tmpfs -o mode=0755,size=1m hidden "$p"; done
    mount --bind "$SITE_DIR/usr-local-bin" /usr/local/bin   # the site'"'"'s own tools (its `module`)
    mount -t tmpfs -o mode=0755 cgroup_root /sys/fs/cgroup
    mkdir -p /sys/fs/cgroup/systemd
    mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
    exec "$@"' "$hostname" "$@"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2; shift 2
  for _ in $(seq $((seconds * 4))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  echo "$NAME: $what did not happen within $seconds s" >&2; return 1
}

# Up and taking jobs; "resv": a reservation (a course's) holds it, as real sites' nodes often are.
node_ready() { in_site sinfo -h -n "$NODE" -o %t | grep -Eq '^(idle|mix|alloc|resv)'; }

up() {
  network_up
  firewall_up
  export HIDDEN_PATHS SITE_DIR=$DIR
  alive "$DIR/run/slurmctld.pid" || start_as "$CONTROLLER" /usr/sbin/slurmctld
  wait_for 30 "slurmctld answering" sh -c "ip netns exec '$NS' scontrol ping | grep -q UP"
  alive "$DIR/run/slurmd.pid" || start_as "$NODE" /usr/sbin/slurmd -N "$NODE"
  mkdir -p /run/sshd
  alive "$DIR/run/sshd.pid" || start_as "$LOGIN" /usr/sbin/sshd -f "$DIR/sshd_config" -E "$DIR/log/sshd.log"
  wait_for 20 "node $NODE registering" sh -c "ip netns exec '$NS' sinfo -h -n '$NODE' -o %t | grep -q ."
  case "$(in_site sinfo -h -n "$NODE" -o %t | head -1)" in
    drain*|down*|inval*|drng*) in_site scontrol update nodename="$NODE" state=resume ;;
  esac
  wait_for 20 "node $NODE idle" node_ready
  wait_for 10 "the login node answering" bash -c "exec 3<>/dev/tcp/$SITE_IP/22"
  echo "$NAME: up (login $SITE_IP:22, controller $CONTROLLER, node $NODE)"
}

status() {
  local state=up ping
  ns_exists || { echo "$NAME: down (no namespace)"; return 3; }
  for d in slurmctld slurmd sshd; do
    if alive "$DIR/run/$d.pid"; then echo "$NAME: $d running (pid $(cat "$DIR/run/$d.pid"))"
    else echo "$NAME: $d not running"; state=degraded; fi
  done
  ping=$(in_site scontrol ping 2>/dev/null) || state=degraded
  echo "$NAME: ${ping%%$'\n'*}"
  in_site sinfo -h -o "$NAME: %P %a %D nodes %c cpus %G %t" 2>/dev/null || true
  echo "$NAME: $state"
  [ "$state" = up ]
}

down() {
  for d in sshd slurmd slurmctld; do
    pf=$DIR/run/$d.pid
    alive "$pf" || continue
    pid=$(cat "$pf"); kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  # jobs' processes (slurmstepd and what it started) live in the namespace too
  if ns_exists; then
    pids=$(ip netns pids "$NS" 2>/dev/null || true)
    [ -n "$pids" ] && kill $pids 2>/dev/null || true
    for _ in $(seq 50); do [ -z "$(ip netns pids "$NS" 2>/dev/null)" ] && break; sleep 0.1; done
    pids=$(ip netns pids "$NS" 2>/dev/null || true)
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
    ip netns del "$NS"
  fi
  ip link show "$NS" >/dev/null 2>&1 && ip link del "$NS" 2>/dev/null || true
  # the kernel removes a deleted namespace's links a moment later: wait, so that `up` starts clean
  for _ in $(seq 100); do ip link show "$NS" >/dev/null 2>&1 || break; sleep 0.1; done
  echo "$NAME: down"
}

authorize() {
  local user=${1:?site user} line uid home
  # a key (type, base64, comment), with at most a from="addresses" clause as JuDoor asks for:
  # no other authorized_keys option (command=, environment=, ...)
  line=$(head -c 16384 | head -n 1 | tr -d '\r')
  [[ "$line" =~ ^(from=\"[0-9a-f.:/,]+\"\ )?(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|ssh-rsa)\ [A-Za-z0-9+/]+=*(\ [A-Za-z0-9@:._+-]*)?$ ]] &&
    ssh-keygen -l -f - <<<"${line#from=* }" >/dev/null || { echo "$NAME: not an OpenSSH public key line" >&2; return 2; }
  uid=$(awk -F: -v u="$user" '$1 == u { print $3 }' "/etc/netns/$NS/passwd")
  # site users only (uid 20000 and up), never the host's system accounts copied into the site
  [ -n "$uid" ] && [ "$uid" -ge 20000 ] || { echo "$NAME: no site user $user on this site" >&2; return 2; }
  home=${HOME_PATTERN//\{user\}/$user}
  # as the user (runuser in the site): a home the user owns is never written through by root
  in_site runuser -u "$user" -- sh -c 'umask 077; mkdir -p "$1/.ssh"; f="$1/.ssh/authorized_keys";
    touch "$f"; [ -s "$f" ] && [ -n "$(tail -c 1 "$f")" ] && echo >> "$f"
    grep -qxF "$2" "$f" || printf "%s\n" "$2" >> "$f"' sh "$home" "$line"
  echo "$NAME: key authorized for $user"
}

case "$action" in
  up) up ;;
  authorize) authorize "${3:-}" ;;
  status) status ;;
  down) down ;;
  *) echo "usage: simsite.sh up|status|down SITE_DIR" >&2; exit 2 ;;
esac
