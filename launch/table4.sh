#!/usr/bin/env bash
# Table 4 over seeds of the whole pipeline: GRPO (K=0) and EG-GRPO (K=2, K=4, and K=2 with
# the simulator's reward) at the operating point rl/operating_point.gin, each seed's runs
# starting from that seed's CQ-SID generator of launch/paper_tables.sh (RL seed = s), then
# report_rl over the seeds: each run paired with its own SFT start on the same test requests.
#   SEEDS="0 1 2"  SETTING=default  TEST_REQUESTS=5000
#   VARIANTS="grpo_k0 eg_grpo_k2 eg_grpo_k4 eg_grpo_k2_simulated"
# Runs go to $PAPER_TABLES_DIR/<setting>/seed<s>/rl/cq_sid/<variant>_s<s>/ and the table to
# $PAPER_TABLES_DIR/<setting>/eval/table4.md (+ rl_curves.png). Finished runs are reused.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/_venv.sh"
root="${PAPER_TABLES_DIR:-$REPO_ROOT/workdir/paper_tables}/${SETTING:-default}"
declare -A variant_gin=(
  [grpo_k0]=rl/grpo_k0.gin
  [eg_grpo_k2]=""
  [eg_grpo_k4]=rl/eg_grpo_k4.gin
  [eg_grpo_k2_simulated]=rl/eg_grpo_simulated.gin
)
dirs=()
for seed in ${SEEDS:-0 1 2}; do
  workdir="$root/seed$seed"
  for variant in ${VARIANTS:-grpo_k0 eg_grpo_k2 eg_grpo_k4 eg_grpo_k2_simulated}; do
    if [ -z "${variant_gin[$variant]+set}" ]; then
      echo "error: VARIANTS: unknown variant '$variant' (${!variant_gin[*]})" >&2
      exit 2
    fi
    extra="${variant_gin[$variant]}"
    echo "[table4] $(date +%H:%M:%S) $workdir: ${variant}_s$seed"
    "$VENV_PY" -m gr_jax.main --workdir="$workdir" --gin_file=runs/eg_grpo.gin \
      --gin_file=rl/operating_point.gin ${extra:+--gin_file=$extra} \
      --gin_bindings="train_rl.name = '${variant}_s$seed'" --gin_bindings="train_rl.seed = $seed" \
      --gin_bindings="train_rl.eval_requests = ${TEST_REQUESTS:-5000}" \
      --gin_bindings="TrainerConfig.progress_bar = False"
  done
  dirs+=("'$workdir'")
done
"$VENV_PY" -m gr_jax.main --workdir="$root" --gin_file=runs/rl_report.gin \
  --gin_bindings="report_rl.seed_workdirs=($(IFS=,; echo "${dirs[*]}"),)"
