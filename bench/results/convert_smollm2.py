"""Convert SmolLM2-135M-Instruct (GGUF from ../shared/tools/get-smollm2.sh) to an HF safetensors folder.

Why: the training and evaluation code loads models with `from_pretrained(DIR)`; until model.path
accepts a .gguf directly, the real-model experiment (bench/results/run_smollm2.py) uses this folder.
The GGUF is Q4_1; transformers de-quantizes it to float32 on load, so the folder holds the
de-quantized weights (what any GGUF-based run trains from).

    python bench/results/convert_smollm2.py GGUF_FILE OUT_DIR
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def convert(gguf: Path, out: Path) -> Path:
    """Load the GGUF with transformers, write model + tokenizer with save_pretrained; return out."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not gguf.is_file():
        raise FileNotFoundError(f"{gguf}: no such GGUF file (run ../shared/tools/get-smollm2.sh DIR)")
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    tmp = out.with_name(out.name + ".tmp")
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # a GGUF-loaded model refuses save_pretrained (its quantizer); rebuild a plain float model
    # from the de-quantized weights instead
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise RuntimeError(f"{gguf}: weights do not match the config (missing {missing}, unexpected {unexpected})")
    model.tie_weights()
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)
    return out


def check(gguf: Path, out: Path, text: str = "The patient was treated with insulin for type 2 diabetes.") -> float:
    """Largest |logit difference| between the GGUF-loaded model and the converted folder on a short text."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        a = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()(ids).logits
        b = AutoModelForCausalLM.from_pretrained(out).eval()(ids).logits
    if tok(text).input_ids != AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)(text).input_ids:
        raise RuntimeError(f"{out}: the saved tokenizer encodes differently from the GGUF's")
    return float((a - b).abs().max())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gguf", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--check", action="store_true", help="compare logits of the GGUF and the converted folder")
    a = ap.parse_args(argv)
    print(convert(a.gguf, a.out))
    if a.check:
        diff = check(a.gguf, a.out)
        print(f"max |logit difference| GGUF vs converted: {diff:.2e}")
        if diff > 1e-3:
            raise SystemExit(f"{a.out}: converted model differs from the GGUF (max |logit difference| {diff:.3g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
