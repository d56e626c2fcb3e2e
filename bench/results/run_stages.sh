#!/usr/bin/env bash
# The three-stage experiment of docs/results.md: enwiki pre-training (stage 1), then one multi-stage CPT recipe,
# code (stage 2) then medical text (stage 3), trained twice at equal steps per stage: Ibrahim et al.'s infinite
# schedule (trunk at constant LR across the stages, an annealed branch at the end of each) and cosine re-warm +
# re-decay in every stage. Both CPT runs train side by side (one thread each).
#   bash bench/results/run_stages.sh [OUT]        (default OUT=/work/runs-stages; DATA=/work/shared/data)
# Extra arguments of stages_prepare.py go in PREPARE_ARGS. Re-running resumes: finished steps are skipped.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="$(realpath -m "${1:-/work/runs-stages}")"
DATA="${DATA:-/work/shared/data}"
NICE="nice -n ${NICENESS:-10}"
cd "$REPO"
SECONDS=0
# shellcheck disable=SC2086
$NICE python bench/results/stages_prepare.py --data "$DATA" --out "$OUT" ${PREPARE_ARGS:-}
echo "prepare: ${SECONDS}s"
if [ ! -d "$OUT/pretrain/train/export" ]; then
  ( cd "$OUT" && $NICE curate score pretrain.toml && $NICE mix plan pretrain.toml \
      && $NICE mix build pretrain.toml --workers 1 && $NICE train run pretrain.toml )
fi
echo "pre-training done: ${SECONDS}s"
for schedule in infinite cosine; do
  ( cd "$OUT" && $NICE curate score "stages-$schedule.toml" && $NICE mix plan "stages-$schedule.toml" \
      && $NICE mix build "stages-$schedule.toml" --workers 1 )
done
echo "curate + mix done: ${SECONDS}s"
pids=()
for schedule in infinite cosine; do
  ( cd "$OUT" && $NICE train run "stages-$schedule.toml" > "$OUT/train-$schedule.log" 2>&1 ) &
  pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || { status=$?; echo "train run failed (exit $status): see $OUT/train-*.log" >&2; }
done
echo "train runs done: ${SECONDS}s"
[ "$status" -eq 0 ] || exit "$status"
python bench/results/stages_summary.py --infinite "$OUT/stages-infinite/train" --cosine "$OUT/stages-cosine/train" \
    --out "$OUT/summary"
