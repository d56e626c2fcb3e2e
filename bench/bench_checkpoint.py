"""What checkpoint checksums cost: save, verify and load of a ~500 MB checkpoint (weights + AdamW moments).

Times train.checkpoint's real save (DCP + RNG + checksums.json), the checksum share of it, the
verification at resume, and the (safe) load; blake2b over the same files for comparison.
Run: python bench/bench_checkpoint.py [--mb 500] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

import torch

from continua import checksums
from train import checkpoint as ckpt
from train.parallel import Dist


def _blake2b(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--mb", type=float, default=500, help="checkpoint size: fp32 weights + 2 AdamW moments")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    width = 2048
    layers = max(1, round(args.mb * 2**20 / 12 / (width * width)))  # 4 bytes x (weight + 2 moments)
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width, bias=False) for _ in range(layers)])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, width)).sum().backward()
    opt.step()
    d = Dist(0, 1, 0, torch.device("cpu"))
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        t = time.perf_counter()
        path = ckpt.save_checkpoint(run, 1, model, opt, {"sampler": {}}, keep=1, d=d)
        out["save_s"] = time.perf_counter() - t
        files = sorted(f.name for f in path.iterdir() if f.name != checksums.MANIFEST)
        out["size_mb"] = sum((path / f).stat().st_size for f in files) / 2**20
        t = time.perf_counter()
        checksums.describe(path, files)
        out["xxh3_hash_s"] = time.perf_counter() - t
        t = time.perf_counter()
        for f in files:
            _blake2b(path / f)
        out["blake2b_hash_s"] = time.perf_counter() - t
        t = time.perf_counter()
        assert ckpt.newest_valid_checkpoint(run, d, print) == path
        out["verify_s"] = time.perf_counter() - t
        t = time.perf_counter()
        ckpt.load_checkpoint(path, model, opt, d)
        out["load_s"] = time.perf_counter() - t
    out["xxh3_GB_per_s"] = out["size_mb"] / 1024 / out["xxh3_hash_s"]
    out["checksum_share_of_save"] = out["xxh3_hash_s"] / out["save_s"]
    out["verify_vs_load"] = out["verify_s"] / out["load_s"]
    for k, v in out.items():
        print(f"{k:24s} {v:.3f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
