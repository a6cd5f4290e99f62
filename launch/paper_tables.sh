#!/usr/bin/env bash
# Tables 1-3 analogues for all four tokenizers (CQ-SID, RQ-VAE, w/o Cate, w/o QI)
# under three world settings: default, informative titles, high query ambiguity.
# Each setting is one quickstart-sized run in workdir/paper_tables/<setting>/;
# finished stages are reused. Takes several quickstarts' time on a 2-core CPU.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="${PAPER_TABLES_DIR:-$here/../workdir/paper_tables}"
declare -A settings=(
  [default]=""
  [informative_titles]="prepare_data.overrides={'title_noise': 0.0}"
  [high_ambiguity]="prepare_data.overrides={'query_ambiguity': 0.6}"
)
# A fine beam grid for the "half the beams" figure (smallest beam reaching the
# baseline's beam-100 hitrate).
grid="evaluate.curve_beam_sizes=(1,5,10,20,30,40,50,60,70,80,90,100)"
for name in default informative_titles high_ambiguity; do
  WORKDIR="$root/$name" TOKENIZERS="cq_sid rqvae cq_sid_wo_cate cq_sid_wo_qi" RL=0 \
    GIN_BINDINGS="${settings[$name]:+${settings[$name]};}$grid" bash "$here/quickstart.sh"
done
for name in default informative_titles high_ambiguity; do
  echo "## $name"
  cat "$root/$name/eval/results.md"
done
