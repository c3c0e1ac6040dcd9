#!/bin/bash
# AIFA Workbench: JupyterLab for alice on LUMI (Finland) · AMD MI250X, submitted by the hub.
#SBATCH --job-name=aifa-wb-hub-alice
#SBATCH --account=project_465000123
#SBATCH --partition=small-g
#SBATCH --time=2:00:00
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --no-requeue
#SBATCH --gpus-per-node=2
#SBATCH --cpus-per-task=14
#SBATCH --mem=120G
#SBATCH --reservation=course_day1
#SBATCH --chdir=/users/alice
#SBATCH --output=/users/alice/.aifa-workbench-job-%j.log
#SBATCH --export=NONE
set -euo pipefail
# The hub's variables for this job (its API token among them), in a file only this user reads.
set -a; . /users/alice/.aifa-workbench/job-env-0123456789abcdef; set +a; rm -f /users/alice/.aifa-workbench/job-env-0123456789abcdef
# Reverse reach: the hub's tunnel gateway is the only way to this server. The tunnel takes the
# job's credential (AIFA_TUNNEL_*) at once; nothing after it (the site's profile, modules,
# JupyterLab and its kernels) gets it.
tunnel_dir=$(mktemp -d /users/alice/.aifa-workbench/tunnel-XXXXXXXX)
export AIFA_WORKBENCH_PORT_FILE="$tunnel_dir/port"
/appl/local/aifa-workbench/envs/lumi-stack/current/bin/python -m aifa_workbench.extensions.reverse_tunnel "$tunnel_dir" &
tunnel=$!
unset AIFA_TUNNEL_KEY AIFA_TUNNEL_CERT AIFA_TUNNEL_KNOWN_HOSTS
# --export=NONE: the script starts from the user's login environment on the node (Slurm's
# implied --get-user-env), nothing of the login node's session. Lmod's `module` is a shell
# function that a batch shell may lack: then it comes from the site's profile, read before
# PATH is set below (a profile may reset PATH).
type module >/dev/null 2>&1 || { set +u; . /etc/profile >/dev/null 2>&1 || true; set -u; }
export HOME=/users/alice USER=alice
export PATH=/appl/local/aifa-workbench/envs/lumi-stack/current/bin:/usr/bin:/usr/local/bin:/usr/bin:/bin
# srun from a notebook: the job's --export would reach every srun (NONE: no PATH, no modules), and
# Slurm >= 22.05 no longer passes the job's --cpus-per-task to it (sbatch manual; JSC, LUMI).
export SLURM_EXPORT_ENV=ALL
[ -z "${SLURM_CPUS_PER_TASK:-}" ] || export SRUN_CPUS_PER_TASK="$SLURM_CPUS_PER_TASK"
# The login session's runtime directory, which does not exist on the node (as LUMI's own Jupyter app).
unset XDG_RUNTIME_DIR
# For what runs inside the job: the job panel, the walltime guard, Dask presets and dashboards.
export AIFA_WORKBENCH_SITE=lumi AIFA_WORKBENCH_ENVIRONMENT=pytorch-container
export AIFA_WORKBENCH_WARN_MINUTES=10,2 AIFA_WORKBENCH_SLURM_BIN=/usr/bin
export AIFA_WORKBENCH_PROJECT_DIR=/project/project_465000123
export AIFA_WORKBENCH_SCRATCH_DIR=/scratch/project_465000123
# Caches away from the small home: PyTorch's and Hugging Face's hold downloaded code, pickled
# weights and a saved token, so they go to a 0700 folder of the user's own on the project's
# scratch (made now, or theirs alone already) only where nobody else can move it away and put a
# link of theirs in its place
# after this check: every folder from it up to / is the user's or root's and, unless sticky,
# writable by its owner alone. A project's scratch is usually its group's to write in (setgid,
# 2770 on the simulated sites; strangers share a course's), so the caches then stay in the home.
folder_is_held() {
  local d=$1
  while :; do
    { [ -O "$d" ] || [ "$(stat -c %u -- "$d")" = 0 ]; } || return 1
    [ -k "$d" ] || [ -z "$(find "$d" -maxdepth 0 -perm /022 -print)" ] || return 1
    [ "$d" = / ] && return 0
    d=$(dirname -- "$d")
  done
}
# made now, or already the user's alone (no group or other bits), holding no one else's caches
cache_folder_is_ours() {
  mkdir -m 0700 "$1" 2>/dev/null && return 0
  [ -d "$1" ] && [ ! -L "$1" ] && [ -O "$1" ] && [ -z "$(find "$1" -maxdepth 0 -perm /077 -print)" ] || return 1
  local d
  for d in "$1/torch" "$1/huggingface"; do
    if [ -e "$d" ] || [ -L "$d" ]; then [ ! -L "$d" ] && [ -O "$d" ] || return 1; fi
  done
}
scratch=$(cd -P -- /scratch/project_465000123 2>/dev/null && pwd) || scratch=
cache_home=$scratch/$USER
if [ -z "$scratch" ]; then
  :
elif ! folder_is_held "$scratch"; then
  echo "AIFA Workbench: PyTorch's and Hugging Face's caches stay in your home: others may rename folders in $scratch, so downloaded code kept there would not be safe."
elif cache_folder_is_ours "$cache_home"; then
  export TORCH_HOME="$cache_home/torch" HF_HOME="$cache_home/huggingface"
else
  echo "AIFA Workbench: PyTorch's and Hugging Face's caches stay in your home: $cache_home is not a folder of yours alone (mode 0700)."
fi
export DASK_DISTRIBUTED__DASHBOARD__LINK='{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/status'
export DASK_LABEXTENSION__FACTORY__MODULE=workbench DASK_LABEXTENSION__FACTORY__CLASS=default_cluster
# RCCL over the Slingshot interfaces: "always needs to be set on LUMI" (LUMI course notes).
export NCCL_SOCKET_IFNAME=hsn0,hsn1,hsn2,hsn3
# MIOpen's caches in a private temporary directory (on compute nodes /tmp is memory, counted
# against the job); LUMI's AI guide names MIOPEN_USER_DB, EasyBuild's PyTorch MIOPEN_USER_DB_PATH.
cache_dir=$(mktemp -d "${TMPDIR:-/tmp}/aifa-cache-XXXXXXXX")
export MIOPEN_USER_DB_PATH="$cache_dir/miopen" MIOPEN_USER_DB="$cache_dir/miopen" MIOPEN_CUSTOM_CACHE_DIR="$cache_dir/miopen"
# The runtime in the image sees the image's site packages, and with them the user's ~/.local,
# where an old jupyter_server or distributed would shadow its own (LUMI's own Jupyter app sets
# it too). Packages installed with pip --user are not seen in this environment.
export PYTHONNOUSERSITE=1
module purge
module use /appl/local/laifs/modules
module load lumi-aif-singularity-bindings
echo "AIFA Workbench job $SLURM_JOB_ID on $(hostname) started $(date -Is)"
/appl/local/aifa-workbench/envs/lumi-stack/current/bin/python -m aifa_workbench.extensions.starter_notebooks || true
# The image holds no Slurm: inside it, Slurm's commands are stand-ins that ask a relay out here,
# which runs the node's own (extensions/slurm_relay.py; a folder of the user's alone, seen inside
# at the same path), so that Dask presets and squeue work in the notebook.
slurm_relay_dir=$(mktemp -d /users/alice/.aifa-workbench/slurm-relay-"$SLURM_CLUSTER_NAME-$SLURM_JOB_ID"-XXXXXXXX)
/appl/local/aifa-workbench/envs/lumi-stack/current/bin/python -m aifa_workbench.extensions.slurm_relay serve "$slurm_relay_dir" /usr/bin /appl/local/aifa-workbench/envs/pytorch-container/current/bin/python &
slurm_relay=$!
export AIFA_WORKBENCH_RELAY_BIN="$slurm_relay_dir/bin"
set +e
# On scancel or the time limit Slurm signals the job: pass it on, wait for the server, then
# tell the hub the job ends so that it notices at once.
trap 'kill -TERM "$server" 2>/dev/null' TERM INT
for attempt in 1 2 3; do
# JupyterLab inside the image, from the runtime install-runtime made there on the image's own
# packages; the runtime directory is bound in (the container sees none of the node's /opt).
singularity run --bind /appl/local/aifa-workbench /appl/local/laifs/containers/lumi-multitorch-u24r70f21m50t210-20260415_130625/lumi-multitorch-full-u24r70f21m50t210-20260415_130625.sif \
  bash -c 'source "$0/bin/activate" && export PATH="$AIFA_WORKBENCH_RELAY_BIN:$PATH" AIFA_WORKBENCH_SLURM_BIN="$AIFA_WORKBENCH_RELAY_BIN" && exec "$@"' /appl/local/aifa-workbench/envs/pytorch-container/current \
  /appl/local/aifa-workbench/envs/pytorch-container/current/bin/jupyterhub-singleuser --ServerApp.port=0 --ServerApp.jpserver_extensions=aifa_workbench.extensions.server_extension=True &
server=$!
wait "$server"; code=$?
while kill -0 "$server" 2>/dev/null; do wait "$server"; code=$?; done
# jupyter_server frees the port the system gave it before listening on it: a server starting
# beside it on the node may take that port meanwhile; then it stops at once and starts again
[ "$code" != 0 ] && tail -n 20 "$HOME/.aifa-workbench-job-$SLURM_JOB_ID.log" 2>/dev/null | grep -q "no available port could be found" || break
echo "AIFA Workbench: the server's port was taken as it started; starting it again"
done
echo "AIFA Workbench job $SLURM_JOB_ID ended $(date -Is) with exit code $code"
kill -TERM "$slurm_relay" 2>/dev/null; wait "$slurm_relay" 2>/dev/null; rm -rf "$slurm_relay_dir"
kill -TERM "$tunnel" 2>/dev/null; wait "$tunnel" 2>/dev/null; rm -rf "$tunnel_dir"
/appl/local/aifa-workbench/envs/lumi-stack/current/bin/python -m aifa_workbench.extensions.job_report ended "$code" >/dev/null 2>&1
exit "$code"
