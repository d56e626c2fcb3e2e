#!/usr/bin/env bash
# The laws experiment of docs/results.md: three base sizes pre-trained on enwiki, CPT into medical text
# at four replay shares and two peak LRs (proxies: short runs of the two small bases and of the large one;
# the full grid: the large base at the full budget, held out), a schedule sweep for the curve law, the
# fits, the choice, and the merge front.  Usage: bash bench/results/run_laws.sh [OUT] (default /work/runs-laws)
set -euo pipefail
OUT=$(realpath -m "${1:-/work/runs-laws}")
REPO=$(cd "$(dirname "$0")/../.." && pwd)
TOL=${TOL:-0.1}
cd "$REPO"
python bench/results/laws_prepare.py --out "$OUT"
# the pre-training data only while a base is missing (a finished experiment re-fits without re-scoring)
if ! [ -d "$OUT/pre-s/train/export" ] || ! [ -d "$OUT/pre-m/train/export" ] || ! [ -d "$OUT/pre-l/train/export" ]; then
  ( cd "$OUT" && curate score pretrain.toml && mix plan pretrain.toml && mix build pretrain.toml --workers 1 )
fi
for size in "s 32 88 2" "m 64 176 2" "l 128 344 3"; do
  set -- $size
  [ -d "$OUT/pre-$1/train/export" ] || train run "$OUT/pretrain.toml" --set run.out_dir="\"$OUT/pre-$1\"" \
      --set train.shards="\"$OUT/pretrain/mix/shards\"" --set model.hidden_size=$2 --set model.intermediate_size=$3 \
      --set model.num_layers=$4
done
S=$OUT/pre-s/train/export; M=$OUT/pre-m/train/export; L=$OUT/pre-l/train/export
SHARES=replay=0,0.1,0.25,0.5; LRS=lr=1e-3,3e-3
# proxies: the two small bases at 10% and 25% of the budget
continua sweep "$OUT/cpt.toml" --out "$OUT/sweep-small" --grid $SHARES --grid $LRS --grid model=$S,$M --grid fraction=10%,25%
# the large base: 10% (a proxy) and 100% (the full grid, held out of the fit)
continua sweep "$OUT/cpt.toml" --out "$OUT/sweep-large" --grid $SHARES --grid $LRS --grid model=$L --grid fraction=10%,100%
# schedules for the curve law: the middle base, replay 0.1, full budget
continua sweep "$OUT/cpt.toml" --out "$OUT/sweep-sched" --grid schedule=cosine,constant,wsd,infinite --grid $LRS \
    --grid replay=0.1 --grid model=$M
# fits: (a) held out the large base's full-budget runs (longer D); (b) held out every large-base run (larger N too)
BOOT=${BOOT:-12}   # bootstrap refits per law (the machine is shared: 12 keeps every fit under a few minutes)
continua law fit "$OUT/sweep-small" "$OUT/sweep-large" --holdout fraction=1 --curves none --boot $BOOT --out "$OUT/fit"
continua law fit "$OUT/sweep-small" "$OUT/sweep-large" --holdout N\>=$(python -c "
import json; print(max(r['N'] for r in json.load(open('$OUT/sweep-large/sweep.json'))['runs']))") --curves none --boot $BOOT --out "$OUT/fit-n"
continua law fit "$OUT/sweep-sched" --holdout schedule=wsd --holdout schedule=infinite --curves heldout --boot $BOOT --out "$OUT/fit-sched"
continua merge "$L" "$OUT/sweep-large/cpt-r0-lr3e-3-f100/train" --out "$OUT/merge" --lambdas 0,0.25,0.5,0.75,1
continua law choose "$OUT/fit" --tolerance "$TOL" --out "$OUT/choice" --merge "$OUT/merge"
continua law choose "$OUT/fit-n" --tolerance "$TOL" --out "$OUT/choice-n" --merge "$OUT/merge"
python bench/results/laws_summary.py --out "$OUT"
