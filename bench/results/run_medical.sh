#!/usr/bin/env bash
# The real-data experiment of docs/results.md, end to end on CPU (no GPU, no download).
#   bash bench/results/run_medical.sh [OUT]        (default OUT=/work/runs-results; DATA=/work/shared/data)
# Every step resumes: re-running skips what is finished.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="${1:-/work/runs-results}"
DATA="${DATA:-/work/shared/data}"
mkdir -p "$OUT"

# 1. corpora (seeded samples), 8k byte-level BPE, classifier sets, pre-training recipe
[ -f "$OUT/pretrain.toml" ] || python "$REPO/bench/results/prepare_medical.py" --data "$DATA" --out "$OUT"

# 2. medical-quality fastText classifier: PubMedQA contexts (positives) vs other medical documents
[ -f "$OUT/classifier/medical_quality.bin" ] || curate train-classifier --pos "$OUT/data/clf_pos.jsonl" \
    --neg "$OUT/data/clf_neg.jsonl" --balance --threads 1 --seed 0 --out "$OUT/classifier/medical_quality.bin"

# 3. pre-train the base model on the enwiki sample
(cd "$OUT" && curate score pretrain.toml && mix plan pretrain.toml && mix build pretrain.toml --workers 2 \
    && train run pretrain.toml)

# 4. continual pre-training on medical text: naive vs Guo et al. (40%) vs 5% / 25% replay vs half the LR.
#    The recipes as they were when docs/results.md was measured (commit b024ec6: peak LR 2e-3 = this
#    experiment's pre-training LR, one process); recipes/ has since followed the demo (LR 3e-3, nproc 2).
mkdir -p "$OUT/recipes"
for r in naive guo-40 replay-5 replay-25 lr-low; do
  git -C "$REPO" show "b024ec6:recipes/$r.toml" > "$OUT/recipes/$r.toml"
done
train compare "$OUT"/recipes/{naive,guo-40,replay-5,replay-25,lr-low}.toml \
    --out "$OUT/compare" \
    --set data.tokenizer="\"$OUT/tokenizer\"" \
    --set data.sources.domain.paths="[\"$OUT/data/medical.jsonl\"]" --set data.sources.domain.id_field='"id"' \
    --set data.sources.general.paths="[\"$OUT/data/general.jsonl\"]" --set data.sources.general.id_field='"id"' \
    --set curate.classifiers.quality="\"$OUT/classifier/medical_quality.bin\"" \
    --set model.path="\"$OUT/pretrain/train/export\"" \
    --set mix.valid_fraction=0.03 --set mix.min_subset_docs=10 \
    --set train.batch_size=8 --set train.tensorboard=false \
    --set eval.num_evals=12 --set eval.max_batches=4 --set eval.batch_size=8

# 5. zero-shot MCQ accuracy of the base model and of each CPT model (fixed, evenly spread item subsets)
for m in "$OUT/pretrain/train/export" "$OUT"/compare/{naive,guo-40,replay-5,replay-25,lr-low}/train/export; do
  python "$REPO/bench/bench_mcq.py" --model "$m" --max-items "${MCQ_ITEMS:-100}" --batch-size 8 --device cpu \
      --bench "mmlu_medical=$DATA/benchmarks/mmlu_medical6_test.jsonl" \
      --bench "pubmedqa=$OUT/data/pubmedqa_test.jsonl" \
      --bench "medqa=$DATA/benchmarks/medqa_usmle_4opt_test.jsonl"
done | tee "$OUT/mcq.md"
