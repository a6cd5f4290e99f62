#!/usr/bin/env bash
# Tables 1-3 analogues over seeds of the whole pipeline, in three world settings
# (default, informative titles, high query ambiguity). Every (setting, seed) is one
# quickstart-sized run at the SFT budget SFT_STEPS in $PAPER_TABLES_DIR/<setting>/seed<s>/
# with the tokenizer, SFT and trainer seeds set to s (the world stays fixed). Each run is
# evaluated on valid (VALID_REQUESTS requests: the curve, the Table 2 grid, the beams chosen),
# then on test (TEST_REQUESTS requests: the table beams and the chosen ones), and
# the seeds of a setting are combined by the report_seeds job into
# $PAPER_TABLES_DIR/<setting>/eval_seeds/test/results.md.
# Finished stages are reused, so rerunning the same command resumes.
#   SEEDS="0 1 2"  SETTINGS="default informative_titles high_ambiguity"
#   TOKENIZERS_default="cq_sid rqvae cq_sid_wo_cate cq_sid_wo_qi" (others: cq_sid rqvae)
#   VALID_REQUESTS=1000  TEST_REQUESTS=5000
#   TRUNCATION_BEAMS="150,200,250"  TRUNCATION_SEEDS="0 1 2" (seeds that get the Table 2 grid)
#   SFT_STEPS="{'i2sid': 2400, 'q2sid': 4000, 'uq2sid': 500}" (train_sft.stage_steps)
#   GIN_BINDINGS="a=1;b=2" (extra bindings for every job)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/_venv.sh"
root="${PAPER_TABLES_DIR:-$REPO_ROOT/workdir/paper_tables}"
# Eight times the quickstart's first i2sid / q2sid budget: the largest measured, and valid
# preferred it over one, two and four times (the quickstart stops at two for its time).
sft_steps="{'i2sid': 2400, 'q2sid': 4000, 'uq2sid': 500}"
sft_steps="${SFT_STEPS:-$sft_steps}"
source "$here/_bindings.sh"
extra="${GIN_BINDINGS:-}"
binding_flags extra_flags "$extra"
declare -A settings=(
  [default]=""
  [informative_titles]="prepare_data.overrides={'title_noise': 0.0}"
  [high_ambiguity]="prepare_data.overrides={'query_ambiguity': 0.6}"
)
declare -A tokenizers=(
  [default]="${TOKENIZERS_default:-cq_sid rqvae cq_sid_wo_cate cq_sid_wo_qi}"
  [informative_titles]="${TOKENIZERS_informative_titles:-cq_sid rqvae}"
  [high_ambiguity]="${TOKENIZERS_high_ambiguity:-cq_sid rqvae}"
)
# The beam curve and Table 2 grid apply to CQ-SID and RQ-VAE; ablations get the
# table beams. A fine grid near beam 100 for "half the beams"; beams whose union
# passes 1,000 items for Table 2.
evaluation=(
  --gin_bindings="evaluate.curve_beam_sizes=(1,10,50,60,70,80,90,100)"
  --gin_bindings="evaluate.curve_tokenizers=('cq_sid','rqvae')"
)
for name in ${SETTINGS:-default informative_titles high_ambiguity}; do
  read -r -a toks <<<"${tokenizers[$name]}"
  tok_tuple="($(printf "'%s'," "${toks[@]}"))"
  dirs=()
  for seed in ${SEEDS:-0 1 2}; do
    workdir="$root/$name/seed$seed"
    seeded="train_tokenizer.seed=$seed;train_sft.seed=$seed;TrainerConfig.seed=$seed"
    budget="train_sft.stage_steps=$sft_steps"
    WORKDIR="$workdir" TOKENIZERS="${tokenizers[$name]}" EVAL=0 \
      GIN_BINDINGS="${settings[$name]:+${settings[$name]};}$budget;${extra:+$extra;}$seeded" \
      bash "$here/quickstart.sh"
    truncation="()"
    if [[ " ${TRUNCATION_SEEDS:-${SEEDS:-0 1 2}} " == *" $seed "* ]]; then
      truncation="(${TRUNCATION_BEAMS:-150,200,250})"
    fi
    for split in valid test; do
      requests="${TEST_REQUESTS:-5000}"
      kinds="('semantic','personalized')"
      if [ "$split" = valid ]; then
        requests="${VALID_REQUESTS:-1000}"
        kinds="('semantic',)"  # valid chooses semantic beams only
      fi
      if [ -f "$workdir/eval/$split/metrics.json" ]; then
        echo "[paper_tables] $workdir: $split already evaluated"
        continue
      fi
      echo "[paper_tables] $(date +%H:%M:%S) $workdir: evaluate $split on $requests requests"
      "$VENV_PY" -m gr_jax.main --workdir="$workdir" --gin_file=runs/evaluate.gin \
        --gin_file=runs/quickstart.gin "${evaluation[@]}" \
        --gin_bindings="evaluate.tokenizers=$tok_tuple" --gin_bindings="evaluate.split='$split'" \
        --gin_bindings="evaluate.max_requests=$requests" --gin_bindings="evaluate.kinds=$kinds" \
        --gin_bindings="evaluate.truncation_beam_sizes=$truncation" "${extra_flags[@]}"
    done
    dirs+=("'$workdir'")
  done
  seed_tuple="($(IFS=,; echo "${dirs[*]}"),)"
  "$VENV_PY" -m gr_jax.main --workdir="$root/$name" --gin_file=runs/report_seeds.gin \
    --gin_bindings="report_seeds.seed_workdirs=$seed_tuple"
done
