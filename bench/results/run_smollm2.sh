#!/usr/bin/env bash
# The SmolLM2-135M experiment of docs/results.md, end to end on CPU (no GPU, no download beyond the
# model wheel of ../shared/tools/get-smollm2.sh, which the offline PyPI mirror serves).
#   bash bench/results/run_smollm2.sh [OUT]      (default OUT=/work/runs-smollm2; DATA=/work/shared/data)
# The defaults are a quick check; docs/results.md section 1.6 gives the PREPARE_ARGS / EVAL_ARGS of its
# figures (about 90 minutes on 2 CPU cores). Every step resumes on re-run.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="${1:-/work/runs-smollm2}"
DATA="${DATA:-/work/shared/data}"
GET="${GET_SMOLLM2:-$REPO/../shared/tools/get-smollm2.sh}"
mkdir -p "$OUT"

# 1. the model: GGUF (Q4_1) -> de-quantized HF safetensors folder
GGUF="$OUT/gguf/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$GGUF" ] || bash "$GET" "$OUT/gguf"
python "$REPO/bench/results/convert_smollm2.py" "$GGUF" "$OUT/smollm2-hf" --check

# 2. reference (BC5CDR abstracts, benchmark-free), candidate pool, replay sample, recipes
[ -f "$OUT/prepare.json" ] || python "$REPO/bench/results/prepare_smollm2.py" --data "$DATA" \
    --model "$OUT/smollm2-hf" --out "$OUT" ${PREPARE_ARGS:-}

# 3. Guo et al.'s selector: the reference n-gram model the pool is ranked by
[ -f "$OUT/reference/bc5cdr.ngram.npz" ] || curate train-reference --ref "$OUT/data/reference.jsonl" \
    --out "$OUT/reference/bc5cdr.ngram.npz"

# 4. continual pre-training: guo-40 with the selector, naive, replay-25, lr-high (dense early evaluations)
continua compare "$OUT/recipes/guo-40-reference.toml" "$OUT/recipes/naive.toml" \
    "$OUT/recipes/replay-25.toml" "$OUT/recipes/lr-high.toml" --out "$OUT/compare" --log-x

# 5. the kept band of guo-40 (size, score range, composition by file, examples) beside the rest: the
#    same plan again (same inputs and seed, so the same selection) printed by `mix plan`
mix plan "$OUT/compare/guo-40-reference/train/recipe.toml" --set "mix.out=\"$OUT/guo-band\"" | tee "$OUT/guo-band.txt"

# 6. selector AUC, wikitext-2 loss and benchmark accuracy (+- binomial SE) of the base and every run
python "$REPO/bench/results/eval_smollm2.py" --out "$OUT" --data "$DATA" ${EVAL_ARGS:-}
