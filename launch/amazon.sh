#!/usr/bin/env bash
# Amazon Scientific end to end; reproduces every number of docs/amazon.md:
#   data (MiniLM features) -> CQ-SID + RQ-VAE tokenizers -> SFT (i2sid -> seqrec;
#   i2sid -> q2sid -> uq2sid) -> full-ranking seqrec eval + product-search eval.
# Usage: bash launch/amazon.sh [WORKDIR]   (default workdir/amazon)
#   AMAZON_DIR: folder of the Scientific.* files (default ../shared/data/amazon_scientific)
#   TEXT_CACHE: MiniLM embedding cache shared across runs (default workdir/text_cache)
#   AMAZON_SIZES: a gin file applied after every job's own (e.g. runs/amazon_large.gin)
# A finished stage is skipped on a re-run (delete its folder to redo it).
# Results: WORKDIR/eval/seqrec/results.md and WORKDIR/eval/results.md.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
WORKDIR="${1:-workdir/amazon}"
AMAZON_DIR="${AMAZON_DIR:-../shared/data/amazon_scientific}"
TEXT_CACHE="${TEXT_CACHE:-workdir/text_cache}"

sizes=()
if [ -n "${AMAZON_SIZES:-}" ]; then sizes=(--gin_file="$AMAZON_SIZES"); fi
run_job() {
  "$VENV_PY" -m gr_jax.main --workdir="$WORKDIR" "$@" "${sizes[@]}"
}

run_job --gin_file=runs/amazon_data.gin \
  --gin_bindings="prepare_data.amazon_dir = '$AMAZON_DIR'" \
  --gin_bindings="prepare_data.feature_cache_dir = '$TEXT_CACHE'"
for tokenizer in cq_sid rqvae; do
  run_job --gin_file="runs/amazon_$tokenizer.gin"
done
for tokenizer in cq_sid rqvae; do
  run_job --gin_file=runs/amazon_sft.gin --gin_bindings="train_sft.tokenizer = '$tokenizer'"
  run_job --gin_file=runs/amazon_sft_search.gin --gin_bindings="train_sft.tokenizer = '$tokenizer'"
done
run_job --gin_file=runs/amazon_seqrec_eval.gin
run_job --gin_file=runs/amazon_evaluate.gin
