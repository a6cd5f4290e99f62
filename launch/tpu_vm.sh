#!/usr/bin/env bash
# Runs one gr_jax job on every worker of a Cloud TPU VM slice (one process per host,
# joined by jax.distributed: GR_JAX_DISTRIBUTED=auto reads the TPU metadata).
#
#   bash launch/tpu_vm.sh --tpu=my-v5e-32 --zone=us-west4-a --sync -- \
#     --gin_file=runs/sft.gin --workdir=/mnt/shared/workdir/run
#
# Everything after `--` goes to `python -m gr_jax.main`. --sync first copies this
# checkout (without .venv and work directories) to every worker and installs the
# TPU lock there (GR_JAX_ACCELERATOR=tpu launch/_venv.sh). The work directory must be
# on storage every worker sees (e.g. a Filestore / gcsfuse mount). A preempted (spot) slice:
# recreate it and rerun the same command; the run resumes from its checkpoints.
# --dry_run prints the gcloud commands instead of running them.
set -euo pipefail

usage() {
  sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  cat >&2 <<'EOF'
Options: --tpu=NAME --zone=ZONE --project=PROJECT --remote_dir=DIR --sync --dry_run
EOF
  exit 2
}

tpu=""
zone=""
project=""
remote_dir="gr_jax"
sync=0
dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tpu=*) tpu="${1#*=}" ;;
    --zone=*) zone="${1#*=}" ;;
    --project=*) project="${1#*=}" ;;
    --remote_dir=*) remote_dir="${1#*=}" ;;
    --sync) sync=1 ;;
    --dry_run) dry_run=1 ;;
    --) shift; break ;;
    -h | --help) usage ;;
    *) echo "error: tpu_vm.sh: unknown option '$1' (job arguments go after --)" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$tpu" ] || [ -z "$zone" ]; then
  echo "error: tpu_vm.sh: --tpu and --zone are required" >&2
  exit 2
fi
if [ $# -eq 0 ]; then
  echo "error: tpu_vm.sh: no job arguments; give them after --, e.g. -- --gin_file=... --workdir=..." >&2
  exit 2
fi
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target=(--zone="$zone")
[ -n "$project" ] && target+=(--project="$project")

run() {
  if [ "$dry_run" -eq 1 ]; then
    printf '%q ' "$@" | sed 's/ $//'
    echo
  else
    "$@"
  fi
}

# The job command, quoted once for the remote shell.
job_command="$(printf '%q ' .venv/bin/python -m gr_jax.main "$@")"
remote="cd $(printf '%q' "$remote_dir") && GR_JAX_DISTRIBUTED=auto TF_CPP_MIN_LOG_LEVEL=3 ${job_command% }"

if [ "$sync" -eq 1 ]; then
  archive="/tmp/gr_jax_${tpu}.tar.gz"
  run tar -czf "$archive" -C "$repo_dir" --exclude=.venv --exclude=workdir --exclude=.git .
  run gcloud compute tpus tpu-vm scp "$archive" "$tpu:gr_jax.tar.gz" "${target[@]}" --worker=all
  setup="mkdir -p $(printf '%q' "$remote_dir") && tar -xzf gr_jax.tar.gz -C $(printf '%q' "$remote_dir") && GR_JAX_ACCELERATOR=tpu bash $(printf '%q' "$remote_dir")/launch/_venv.sh"
  run gcloud compute tpus tpu-vm ssh "$tpu" "${target[@]}" --worker=all --command="$setup"
fi
run gcloud compute tpus tpu-vm ssh "$tpu" "${target[@]}" --worker=all --command="$remote"
