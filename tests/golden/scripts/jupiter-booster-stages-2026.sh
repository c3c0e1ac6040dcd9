#!/bin/bash
# AIFA Workbench: JupyterLab for alice on JUPITER (Germany) · NVIDIA GH200 (aarch64), submitted by the hub.
#SBATCH --job-name=aifa-wb-hub-alice
#SBATCH --account=aifabe
#SBATCH --partition=booster
#SBATCH --time=2:00:00
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=288
#SBATCH --exclusive
#SBATCH --mem=0
#SBATCH --reservation=course_day1
#SBATCH --chdir=/e/home/jusers/alice/jupiter
#SBATCH --output=/e/home/jusers/alice/jupiter/.aifa-workbench-job-%j.log
#SBATCH --export=NONE
set -euo pipefail
# The hub's variables for this job (its API token among them), in a file only this user reads.
set -a; . /e/home/jusers/alice/jupiter/.aifa-workbench/job-env-0123456789abcdef; set +a; rm -f /e/home/jusers/alice/jupiter/.aifa-workbench/job-env-0123456789abcdef
# --export=NONE: the script starts from the user's login environment on the node (Slurm's
# implied --get-user-env), nothing of the login node's session. Lmod's `module` is a shell
# function that a batch shell may lack: then it comes from the site's profile, read before
# PATH is set below (a profile may reset PATH).
type module >/dev/null 2>&1 || { set +u; . /etc/profile >/dev/null 2>&1 || true; set -u; }
export HOME=/e/home/jusers/alice/jupiter USER=alice
export PATH=/e/software/jupiter/aifa-workbench/envs/stages-2026/current/bin:/usr/bin:/usr/local/bin:/usr/bin:/bin
# srun from a notebook: the job's --export would reach every srun (NONE: no PATH, no modules), and
# Slurm >= 22.05 no longer passes the job's --cpus-per-task to it (sbatch manual; JSC, LUMI).
export SLURM_EXPORT_ENV=ALL
[ -z "${SLURM_CPUS_PER_TASK:-}" ] || export SRUN_CPUS_PER_TASK="$SLURM_CPUS_PER_TASK"
# The login session's runtime directory, which does not exist on the node (as LUMI's own Jupyter app).
unset XDG_RUNTIME_DIR
# For what runs inside the job: the job panel, the walltime guard, Dask presets and dashboards.
export AIFA_WORKBENCH_SITE=jupiter AIFA_WORKBENCH_ENVIRONMENT=stages-2026
export AIFA_WORKBENCH_WARN_MINUTES=10,2 AIFA_WORKBENCH_SLURM_BIN=/usr/bin
export AIFA_WORKBENCH_PROJECT_DIR=/e/project1/aifabe
export AIFA_WORKBENCH_SCRATCH_DIR=/e/scratch/aifabe
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
scratch=$(cd -P -- /e/scratch/aifabe 2>/dev/null && pwd) || scratch=
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
# One task sees one GPU unless told otherwise (JSC's GPU page): the job's one task, and what
# it starts, get every GPU of the node it holds alone.
export CUDA_VISIBLE_DEVICES=0,1,2,3
module load Stages/2026 GCC CUDA OpenMPI NCCL Python
echo "AIFA Workbench job $SLURM_JOB_ID on $(hostname) started $(date -Is)"
/e/software/jupiter/aifa-workbench/envs/stages-2026/current/bin/python -m aifa_workbench.extensions.starter_notebooks || true
set +e
# On scancel or the time limit Slurm signals the job: pass it on, wait for the server, then
# tell the hub the job ends so that it notices at once.
trap 'kill -TERM "$server" 2>/dev/null' TERM INT
for attempt in 1 2 3; do
/e/software/jupiter/aifa-workbench/envs/stages-2026/current/bin/jupyterhub-singleuser --ServerApp.port=0 --ServerApp.jpserver_extensions=aifa_workbench.extensions.server_extension=True &
server=$!
wait "$server"; code=$?
while kill -0 "$server" 2>/dev/null; do wait "$server"; code=$?; done
# jupyter_server frees the port the system gave it before listening on it: a server starting
# beside it on the node may take that port meanwhile; then it stops at once and starts again
[ "$code" != 0 ] && tail -n 20 "$HOME/.aifa-workbench-job-$SLURM_JOB_ID.log" 2>/dev/null | grep -q "no available port could be found" || break
echo "AIFA Workbench: the server's port was taken as it started; starting it again"
done
echo "AIFA Workbench job $SLURM_JOB_ID ended $(date -Is) with exit code $code"
/e/software/jupiter/aifa-workbench/envs/stages-2026/current/bin/python -m aifa_workbench.extensions.job_report ended "$code" >/dev/null 2>&1
exit "$code"
