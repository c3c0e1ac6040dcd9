#!/bin/bash
# simsite.sh up|status|down SITE_DIR — one simulated site: a network namespace holding its own
# accounting daemon, Slurm controller, compute node and login node (sshd), each with the site's
# host name, in a mount namespace of its own whose root is the site's userland (SITE_DIR/root,
# made by siteroot.sh: another Debian release, another architecture where the site has one),
# with the site's shared file systems (SITE_DIR/fs/<path>) mounted at their paths: nothing of the
# hub host's files is there. The site's Slurm is the root's own (daemons and commands).
# SITE_DIR/site.env (written by the sim_sites role) says NAME, NS, INDEX, CONTROLLER, NODE, NODES,
# LOGIN, FILESYSTEMS. Daemons are found by PID file, never by name. Idempotent.
# `exec SITE_DIR [-u USER] COMMAND...` runs a command on the site's login node (as USER).
# `authorize SITE_DIR SITE_USER` (public key on stdin) plays the site's portal: the key is added
# to that user's authorized_keys on the site.
set -euo pipefail
action=${1:?usage: simsite.sh up|status|down SITE_DIR}
DIR=${2:?usage: simsite.sh up|status|down SITE_DIR}
# shellcheck disable=SC1091
. "$DIR/site.env"
NODES=${NODES:-$NODE}
ROOT=$DIR/root
FS=$DIR/fs
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
nonempty() { local out; out=$("$@" 2>/dev/null) && [ -n "$out" ]; }

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

# A closed site (REACH=reverse: LUMI; forward: JUPITER, Lucia) lets in only its login node's sshd;
# its nodes dial out only to OPEN_OUT (for LUMI the hub's tunnel gateway and public URL).
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

# Run COMMAND as host HOSTNAME of the site: own UTS and mount namespaces, entered through
# `enter` (this script again, inside them), which mounts the site's file systems into its root
# and makes that root the namespace's.
start_as() {
  local hostname=$1; shift
  in_site unshare --uts --mount --propagation private "$0" enter "$DIR" "$hostname" "$@"
}

# Inside a fresh mount namespace: the root's /dev, /proc, /sys (ip netns exec remounted /sys for
# the site's network), a /tmp of this host name's own, munge's socket (the hub host's munged:
# one key for every simulated cluster), MariaDB's socket for the accounting daemon, the site's
# shared file systems, and a cgroup mount slurmd accepts. Then the root becomes the namespace's
# root (pivot_root, not chroot alone: a process in a chroot may not make user namespaces, which
# the site's container runtime needs).
enter() {
  local hostname=$1; shift
  hostname "$hostname"
  mount --bind "$ROOT" "$ROOT"
  mount --rbind /dev "$ROOT/dev"
  mount -t proc proc "$ROOT/proc"
  mount --rbind /sys "$ROOT/sys"
  mount -t tmpfs -o mode=0755 cgroup_root "$ROOT/sys/fs/cgroup"
  mkdir -p "$ROOT/sys/fs/cgroup/systemd"
  mount -t cgroup -o none,name=systemd cgroup "$ROOT/sys/fs/cgroup/systemd"
  mount -t tmpfs -o mode=1777,size=512m tmp "$ROOT/tmp"
  mount --bind /run/munge "$ROOT/run/munge"
  [ -z "${DB_SOCKET_DIR:-}" ] || mount --bind "$DB_SOCKET_DIR" "$ROOT/run/mysqld"
  for p in $FILESYSTEMS; do mount --bind "$FS$p" "$ROOT$p"; done
  mkdir -p "$ROOT/.host"
  cd "$ROOT"
  pivot_root . .host
  # the host's tree leaves, by the root's own umount (the host's binaries are gone from here on)
  exec /usr/sbin/chroot . /bin/sh -c 'umount -l /.host && exec /usr/bin/env -i "$@"' sh \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 ${QEMU_CPU:+QEMU_CPU=$QEMU_CPU} "$@"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2; shift 2
  for _ in $(seq $((seconds * 4))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  echo "$NAME: $what did not happen within $seconds s" >&2; return 1
}

# Up and taking jobs; "resv": a reservation (a course's) holds it, as real sites' nodes often are.
node_ready() { local t; t=$(site_cmd sinfo -h -n "$1" -o %t) && grep -Eq '^(idle|mix|alloc|resv)' <<<"$t"; }
# a command on the site (the login node's host name), as root
site_cmd() { start_as "$LOGIN" "$@"; }
pid_file() { echo "$ROOT/run/aifa/$1.pid"; }
# the site's daemons, each named as its PID file is: slurmd-NODE for each compute node
daemons() { local node; echo slurmdbd slurmctld; for node in $NODES; do echo "slurmd-$node"; done; echo sshd; }

up() {
  local node
  network_up
  firewall_up
  mkdir -p "$ROOT/run/aifa" "$ROOT/run/sshd" "$ROOT/run/munge" "$ROOT/run/mysqld"
  alive "$(pid_file slurmdbd)" || start_as "$CONTROLLER" /usr/sbin/slurmdbd
  wait_for 30 "slurmdbd answering" in_site bash -c "exec 3<>/dev/tcp/$SITE_IP/6819"
  alive "$(pid_file slurmctld)" || start_as "$CONTROLLER" /usr/sbin/slurmctld
  wait_for 30 "slurmctld answering" output_has UP site_cmd scontrol ping
  for node in $NODES; do
    alive "$(pid_file "slurmd-$node")" || start_as "$node" /usr/sbin/slurmd -N "$node"
  done
  alive "$(pid_file sshd)" || start_as "$LOGIN" /usr/sbin/sshd -f /etc/ssh/aifa_sshd_config -E /var/log/aifa-sshd.log
  for node in $NODES; do
    wait_for 20 "node $node registering" nonempty site_cmd sinfo -h -n "$node" -o %t
    case "$(site_cmd sinfo -h -n "$node" -o %t | head -1)" in
      drain*|down*|inval*|drng*) site_cmd scontrol update nodename="$node" state=resume ;;
    esac
    wait_for 20 "node $node idle" node_ready "$node"
  done
  wait_for 10 "the login node answering" bash -c "exec 3<>/dev/tcp/$SITE_IP/22"
  echo "$NAME: up (login $SITE_IP:22, controller $CONTROLLER, nodes $NODES)"
}

status() {
  local state=up ping
  ns_exists || { echo "$NAME: down (no namespace)"; return 3; }
  for d in $(daemons); do
    if alive "$(pid_file $d)"; then echo "$NAME: $d running (pid $(cat "$(pid_file $d)"))"
    else echo "$NAME: $d not running"; state=degraded; fi
  done
  ping=$(site_cmd scontrol ping 2>/dev/null) || state=degraded
  echo "$NAME: ${ping%%$'\n'*}"
  site_cmd sinfo -h -o "$NAME: %P %a %D nodes %c cpus %G %t" 2>/dev/null || true
  echo "$NAME: $state"
  [ "$state" = up ]
}

down() {
  for d in $(daemons | tac); do
    pf=$(pid_file "$d")
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
  uid=$(awk -F: -v u="$user" '$1 == u { print $3 }' "$ROOT/etc/passwd")
  # site users only (uid 20000 and up), never the host's system accounts copied into the site
  [ -n "$uid" ] && [ "$uid" -ge 20000 ] || { echo "$NAME: no site user $user on this site" >&2; return 2; }
  home=$(awk -F: -v u="$user" '$1 == u { print $6 }' "$ROOT/etc/passwd")
  # as the user (runuser in the site): a home the user owns is never written through by root
  site_cmd runuser -u "$user" -- sh -c 'umask 077; mkdir -p "$1/.ssh"; f="$1/.ssh/authorized_keys";
    touch "$f"; [ -s "$f" ] && [ -n "$(tail -c 1 "$f")" ] && echo >> "$f"
    grep -qxF "$2" "$f" || printf "%s\n" "$2" >> "$f"' sh "$home" "$line"
  echo "$NAME: key authorized for $user"
}

# exec SITE_DIR [-u USER] COMMAND...: on the login node, as root or USER (a login shell's
# environment is the command's business: `bash -l -c ...`)
site_exec() {
  # exec all the way down: the caller's process becomes the command (a signal reaches it)
  if [ "${1:-}" = -u ]; then
    local user=${2:?user}; shift 2
    exec ip netns exec "$NS" unshare --uts --mount --propagation private "$0" enter "$DIR" "$LOGIN" runuser -u "$user" -- "$@"
  fi
  exec ip netns exec "$NS" unshare --uts --mount --propagation private "$0" enter "$DIR" "$LOGIN" "$@"
}

case "$action" in
  up) up ;;
  enter) shift 2; enter "$@" ;;
  exec) shift 2; site_exec "$@" ;;
  authorize) authorize "${3:-}" ;;
  status) status ;;
  down) down ;;
  *) echo "usage: simsite.sh up|status|down|exec|authorize SITE_DIR" >&2; exit 2 ;;
esac
