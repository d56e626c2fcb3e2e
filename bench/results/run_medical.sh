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

# 4. continual pre-training on medical text: every strategy recipe of recipes/, as it is, pointed at this data
continua compare "$REPO"/recipes/*.toml \
    --out "$OUT/compare" --log-x \
    --set data.tokenizer="\"$OUT/tokenizer\"" \
    --set data.sources.domain.paths="[\"$OUT/data/medical.jsonl\"]" --set data.sources.domain.id_field='"id"' \
    --set data.sources.general.paths="[\"$OUT/data/general.jsonl\"]" --set data.sources.general.id_field='"id"' \
    --set curate.classifiers.quality="\"$OUT/classifier/medical_quality.bin\"" \
    --set model.path="\"$OUT/pretrain/train/export\"" \
    --set mix.valid_fraction=0.03 --set mix.min_subset_docs=10 \
    --set train.tensorboard=false \
    --set eval.num_evals=12 --set eval.max_batches=4 --set eval.batch_size=8

# 5. zero-shot MCQ accuracy of the base model and of each CPT model (fixed, evenly spread item subsets);
#    runs with the same training settings as another (compare reports them under both names) share a folder
for m in "$OUT/pretrain/train/export" "$OUT"/compare/*/train/export; do
  python "$REPO/bench/bench_mcq.py" --model "$m" --max-items "${MCQ_ITEMS:-100}" --batch-size 8 --device cpu \
      --bench "mmlu_medical=$DATA/benchmarks/mmlu_medical6_test.jsonl" \
      --bench "pubmedqa=$OUT/data/pubmedqa_test.jsonl" \
      --bench "medqa=$DATA/benchmarks/medqa_usmle_4opt_test.jsonl"
done | tee "$OUT/mcq.md"
