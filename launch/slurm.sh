#!/usr/bin/env bash
# Submits one gr_jax job to a SLURM GPU cluster: one process per GPU on every node,
# joined by jax.distributed (GR_JAX_DISTRIBUTED=auto reads the SLURM environment).
#
#   bash launch/slurm.sh --nodes=2 --gpus_per_node=8 --partition=gpu --time=04:00:00 -- \
#     --gin_file=runs/sft.gin --workdir=/shared/workdir/run
#
# Everything after `--` goes to `python -m gr_jax.main`. The work directory must be on a
# filesystem every node sees (checkpoints are written by all processes together), and so
# must the checkout: before submitting, its .venv gets the --accelerator lock (default
# cuda12; launch/_venv.sh, a second once installed), unless --python names another one.
# Preemption: SLURM sends SIGTERM (`--signal`, before the time limit too); the trainer
# then checkpoints and exits 0, and with --requeue the job restarts and resumes.
# --dry_run prints the batch script and the sbatch command instead of submitting.
set -euo pipefail

usage() {
  sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  cat >&2 <<'EOF'
Options: --nodes=N --gpus_per_node=G --partition=P --account=A --time=HH:MM:SS
         --job_name=NAME --log_dir=DIR --signal_seconds=S --requeue --repo_dir=DIR
         --accelerator=cuda12|cpu --python=PATH --dry_run
EOF
  exit 2
}

nodes=1
gpus_per_node=8
partition=""
account=""
time_limit="04:00:00"
job_name="gr_jax"
log_dir="slurm_logs"
signal_seconds=300
requeue=0
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python_bin=""
accelerator="cuda12"
dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes=*) nodes="${1#*=}" ;;
    --gpus_per_node=*) gpus_per_node="${1#*=}" ;;
    --partition=*) partition="${1#*=}" ;;
    --account=*) account="${1#*=}" ;;
    --time=*) time_limit="${1#*=}" ;;
    --job_name=*) job_name="${1#*=}" ;;
    --log_dir=*) log_dir="${1#*=}" ;;
    --signal_seconds=*) signal_seconds="${1#*=}" ;;
    --requeue) requeue=1 ;;
    --repo_dir=*) repo_dir="${1#*=}" ;;
    --python=*) python_bin="${1#*=}" ;;
    --accelerator=*) accelerator="${1#*=}" ;;
    --dry_run) dry_run=1 ;;
    --) shift; break ;;
    -h | --help) usage ;;
    *) echo "error: slurm.sh: unknown option '$1' (job arguments go after --)" >&2; exit 2 ;;
  esac
  shift
done
for pair in "nodes=$nodes" "gpus_per_node=$gpus_per_node" "signal_seconds=$signal_seconds"; do
  value="${pair#*=}"
  if ! [[ "$value" =~ ^[1-9][0-9]*$ ]]; then
    echo "error: slurm.sh: --${pair%%=*} must be a positive integer, got '$value'" >&2
    exit 2
  fi
done
if [ $# -eq 0 ]; then
  echo "error: slurm.sh: no job arguments; give them after --, e.g. -- --gin_file=... --workdir=..." >&2
  exit 2
fi
source "$(dirname "${BASH_SOURCE[0]}")/_lock.sh"
lock_for_accelerator "$accelerator" "slurm.sh: --accelerator" >/dev/null || exit 2
# The checkout's own .venv is installed here, on the submitting host (which has the network).
install=()
if [ -z "$python_bin" ]; then
  install=(env GR_JAX_ACCELERATOR="$accelerator" bash "$repo_dir/launch/_venv.sh")
fi
python_bin="${python_bin:-$repo_dir/.venv/bin/python}"

# The job command, quoted so that bindings with spaces and quotes survive the batch script.
job_command="$(printf '%q ' "$python_bin" -m gr_jax.main "$@")"
header=(
  "#SBATCH --job-name=$job_name"
  "#SBATCH --nodes=$nodes"
  "#SBATCH --ntasks-per-node=$gpus_per_node"
  "#SBATCH --gpus-per-node=$gpus_per_node"
  "#SBATCH --time=$time_limit"
  "#SBATCH --output=$log_dir/%x-%j.out"
  "#SBATCH --signal=TERM@$signal_seconds"
)
[ -n "$partition" ] && header+=("#SBATCH --partition=$partition")
[ -n "$account" ] && header+=("#SBATCH --account=$account")
[ "$requeue" -eq 1 ] && header+=("#SBATCH --requeue")

script="#!/usr/bin/env bash
$(printf '%s\n' "${header[@]}")
set -euo pipefail
cd $(printf '%q' "$repo_dir")
export GR_JAX_DISTRIBUTED=auto TF_CPP_MIN_LOG_LEVEL=3 PYTHONUNBUFFERED=1
# One task per GPU; srun passes SIGTERM on to every task.
srun --kill-on-bad-exit=1 ${job_command% }
"

if [ "$dry_run" -eq 1 ]; then
  printf '%s' "$script"
  if [ ${#install[@]} -gt 0 ]; then
    printf '%q ' "${install[@]}" | sed 's/ $//'
    echo
  fi
  echo "sbatch $log_dir/$job_name.sbatch"
  exit 0
fi
if [ ${#install[@]} -gt 0 ]; then
  "${install[@]}"
fi
mkdir -p "$log_dir"
printf '%s' "$script" >"$log_dir/$job_name.sbatch"
sbatch "$log_dir/$job_name.sbatch"
