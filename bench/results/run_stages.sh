#!/usr/bin/env bash
# The three-stage experiment of docs/results.md: enwiki pre-training (stage 1), then one multi-stage CPT recipe,
# code (stage 2) then medical text (stage 3), trained twice at equal steps per stage: Ibrahim et al.'s infinite
# schedule (trunk at constant LR across the stages, an annealed branch at the end of each) and cosine re-warm +
# re-decay in every stage. The two runs of a seed train side by side (one thread each); SEEDS repeats the pair
# with other data orders (replay draws and batch order), to tell the schedules' difference from noise.
#   bash bench/results/run_stages.sh [OUT]        (default OUT=/work/runs-stages; DATA=/work/shared/data; SEEDS="0 1")
# Extra arguments of stages_prepare.py go in PREPARE_ARGS. Re-running resumes: finished steps are skipped.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="$(realpath -m "${1:-/work/runs-stages}")"
DATA="${DATA:-/work/shared/data}"
NICE="nice -n ${NICENESS:-10}"
SEEDS="${SEEDS:-0 1}"
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
summary=()
for seed in $SEEDS; do
  pids=()
  for schedule in infinite cosine; do
    run="$OUT/stages-$schedule-seed$seed"
    sets=(--set run.seed="$seed" --set run.out_dir="\"$run\"")
    summary+=(--"$schedule" "$run/train")
    [ -f "$run/train/export/config.json" ] && continue
    ( cd "$OUT" && $NICE curate score "stages-$schedule.toml" "${sets[@]}" \
        && $NICE mix plan "stages-$schedule.toml" "${sets[@]}" && $NICE mix build "stages-$schedule.toml" "${sets[@]}" --workers 1 \
        && $NICE train run "stages-$schedule.toml" "${sets[@]}" ) > "$run.log" 2>&1 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do
    wait "$pid" || { echo "seed $seed: a run failed (exit $?): see $OUT/stages-*-seed$seed.log" >&2; exit 1; }
  done
  echo "seed $seed: both runs done: ${SECONDS}s"
done
python bench/results/stages_summary.py "${summary[@]}" --out "$OUT/summary"
