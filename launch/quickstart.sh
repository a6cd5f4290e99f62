#!/usr/bin/env bash
# Installs (first run) and runs the whole pipeline on the built-in `small` world:
# world -> CQ-SID and RQ-VAE tokenizers -> progressive SFT -> constrained-beam
# evaluation on valid then test (Tables 1-3) -> GRPO (K=0) and EG-GRPO (K=2) -> Table 4.
# Finished stages are reused on a rerun; WORKDIR (default workdir/quickstart) holds
# everything. Extra gin bindings for every job: GIN_BINDINGS="a=1;b=2".
# TOKENIZERS (default "cq_sid rqvae") picks the stage-A configs (gin_configs/sid/);
# RL=0 skips stage C; EVAL=0 stops after training (no evaluation, no stage C).
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
WORKDIR="${WORKDIR:-$REPO_ROOT/workdir/quickstart}"
SIZES="${QUICKSTART_GIN:-runs/quickstart.gin}"
source "$(dirname "${BASH_SOURCE[0]}")/_bindings.sh"
binding_flags extra "${GIN_BINDINGS:-}"
job() {
  local run_file="$1"
  shift
  echo "[quickstart] $(date +%H:%M:%S) $run_file $*"
  "$VENV_PY" -m gr_jax.main --workdir="$WORKDIR" --gin_file="$run_file" "$@" \
    --gin_file="$SIZES" "${extra[@]}"
}
start=$(date +%s)
job runs/data.gin
read -r -a tokenizers <<<"${TOKENIZERS:-cq_sid rqvae}"
tok_tuple="($(printf "'%s'," "${tokenizers[@]}"))"
for tok in "${tokenizers[@]}"; do
  job runs/tokenizer.gin --gin_file="sid/$tok.gin" --gin_bindings="train_tokenizer.name='$tok'"
done
for tok in "${tokenizers[@]}"; do
  job runs/sft.gin --gin_bindings="train_sft.tokenizer='$tok'"
done
if [ "${EVAL:-1}" = "0" ]; then
  echo "[quickstart] trained in $(($(date +%s) - start)) s; EVAL=0: no evaluation"
  exit 0
fi
# Beams are chosen on valid, then read once on test.
# Valid chooses semantic beams only, so it scores the semantic generators only.
job runs/evaluate.gin --gin_bindings="evaluate.tokenizers=$tok_tuple" \
  --gin_bindings="evaluate.split='valid'" --gin_bindings="evaluate.kinds=('semantic',)"
job runs/evaluate.gin --gin_bindings="evaluate.tokenizers=$tok_tuple"
if [ "${RL:-1}" = "0" ]; then
  echo "[quickstart] done in $(($(date +%s) - start)) s; results in $WORKDIR/eval/"
  cat "$WORKDIR/eval/test/results.md"
  exit 0
fi
job runs/eg_grpo.gin --gin_file=rl/grpo_k0.gin --gin_bindings="train_rl.name='grpo_k0_s0'" \
  --gin_bindings="TrainerConfig.num_steps=50"
job runs/eg_grpo.gin --gin_bindings="train_rl.name='eg_grpo_k2_s0'" \
  --gin_bindings="TrainerConfig.num_steps=50"
job runs/rl_report.gin
echo
echo "[quickstart] done in $(($(date +%s) - start)) s; results in $WORKDIR/eval/"
cat "$WORKDIR/eval/test/results.md" "$WORKDIR/eval/table4.md"
