#!/usr/bin/env bash
# One Amazon dataset (UniSRec layout) end to end; for Scientific it reproduces every
# number of docs/amazon.md:
#   data (MiniLM features) -> CQ-SID + RQ-VAE tokenizers -> SFT (i2sid -> seqrec;
#   i2sid -> q2sid -> uq2sid) -> full-ranking seqrec eval + product-search eval.
# Usage: [DATASET=Office] bash launch/amazon.sh [WORKDIR]
#   DATASET: the file prefix (Office for Office.text, Office.item2index, ...); unset =
#     Scientific, or the only dataset in AMAZON_DIR. The category root is inferred.
#   WORKDIR: default workdir/amazon (Scientific) or workdir/amazon_<dataset, lower-cased>
#   AMAZON_DIR: folder of the files (default ../shared/data/amazon_<dataset, lower-cased>)
#   QUERY: product-search pseudo-queries, 'category' (default) or 'title' (no category words)
#   TEXT_CACHE: MiniLM embedding cache shared across runs (default workdir/text_cache)
#   AMAZON_SIZES: a gin file applied after every job's own (e.g. runs/amazon_large.gin)
# A finished stage is skipped on a re-run (delete its folder to redo it).
# Results: WORKDIR/eval/seqrec/results.md and WORKDIR/eval/results.md.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
dataset_lower="$(echo "${DATASET:-scientific}" | tr '[:upper:]' '[:lower:]')"
default_workdir=workdir/amazon
if [ -n "${DATASET:-}" ] && [ "$dataset_lower" != scientific ]; then
  default_workdir="workdir/amazon_$dataset_lower"
fi
WORKDIR="${1:-$default_workdir}"
AMAZON_DIR="${AMAZON_DIR:-../shared/data/amazon_$dataset_lower}"
TEXT_CACHE="${TEXT_CACHE:-workdir/text_cache}"

sizes=()
if [ -n "${AMAZON_SIZES:-}" ]; then sizes=(--gin_file="$AMAZON_SIZES"); fi
data_knobs=()
if [ -n "${DATASET:-}" ]; then
  data_knobs+=(--gin_bindings="prepare_data.amazon_dataset = '$DATASET'")
fi
if [ -n "${QUERY:-}" ]; then
  data_knobs+=(--gin_bindings="prepare_data.amazon_query = '$QUERY'")
fi
run_job() {
  "$VENV_PY" -m gr_jax.main --workdir="$WORKDIR" "$@" "${sizes[@]}"
}

run_job --gin_file=runs/amazon_data.gin \
  --gin_bindings="prepare_data.amazon_dir = '$AMAZON_DIR'" \
  --gin_bindings="prepare_data.feature_cache_dir = '$TEXT_CACHE'" "${data_knobs[@]}"
for tokenizer in cq_sid rqvae; do
  run_job --gin_file="runs/amazon_$tokenizer.gin"
done
for tokenizer in cq_sid rqvae; do
  run_job --gin_file=runs/amazon_sft.gin --gin_bindings="train_sft.tokenizer = '$tokenizer'"
  run_job --gin_file=runs/amazon_sft_search.gin --gin_bindings="train_sft.tokenizer = '$tokenizer'"
done
run_job --gin_file=runs/amazon_seqrec_eval.gin
run_job --gin_file=runs/amazon_evaluate.gin
