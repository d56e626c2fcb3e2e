"""Peak memory per rank when `train run` loads a base model: the old way (every rank loads the whole
model, then shards) against the new one (meta device, shard, each rank reads its slices).

A ~134M-parameter Llama (hidden 768, 12 layers, vocab 32000, untied; bf16 safetensors on disk) is
loaded by 2 processes (torchrun, gloo, CPU). Per rank: the peak RSS above the process's RSS before the
model is built (imports, the loading code's included, and the process group excluded), (1) until the
model is loaded and sharded, before the optimizer exists (also its anonymous part alone: RSS counts the mmapped safetensors pages),
and (2) over the whole run: AdamW and 2 training steps (batch 2 x 256).
The 8-rank column is arithmetic, not a run: what scales with 1/world (fp32 weights while loading;
weights, gradients and AdamW moments over the run, 16 bytes/param) is moved from /2 to /8, the rest
(activations, one tensor in flight, allocator slack) kept as measured.

    nice -n 10 python bench/bench_load_memory.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPE = {"vocab_size": 32000, "hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 12,
         "num_attention_heads": 12, "num_key_value_heads": 12, "max_position_embeddings": 512,
         "tie_word_embeddings": False}


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class AnonPeak:
    """Peak anonymous RSS (RssAnon), sampled every 2 ms: RSS also counts the memory-mapped safetensors
    pages a rank reads its slices through, which are page cache the kernel can drop, not memory held."""

    def __init__(self):
        import threading

        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, anon_rss())
            self._stop.wait(0.002)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, anon_rss())


def anon_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def worker(folder: str, mode: str, out: str) -> None:
    """One rank: load the way `mode` says, measure, train 2 steps, measure; rank 0 writes all ranks' numbers."""
    import torch
    import torch.distributed as dist

    from train.loop import forward_backward
    from train.loss import install_chunked_loss
    from train.parallel import init_distributed, prepare_model
    from train.weights import build_empty, load_config, load_weights, resolve_source

    torch.set_num_threads(1)
    d = init_distributed("cpu")
    source = resolve_source(Path(folder))
    config = load_config(source)
    import accelerate  # noqa: F401 - code, not model memory: imported before the baseline in both modes
    import safetensors.torch  # noqa: F401
    import torch.distributed.checkpoint.hf_storage  # noqa: F401
    import torch.distributed.checkpoint.state_dict  # noqa: F401
    import transformers.models.llama.modeling_llama  # noqa: F401

    base, base_anon = current_rss(), anon_rss()
    sampler = AnonPeak()
    if mode == "before":  # what train run did: the whole fp32 model on every rank, then fully_shard
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        prepare_model(model, d, bf16=False)
    else:
        model = build_empty(config)
        prepare_model(model, d, bf16=False)
        load_weights(model, source.path, source.kind)
    loaded = peak_rss() - base
    loaded_anon = sampler.stop() - base_anon
    install_chunked_loss(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(d.rank)
    for _ in range(2):
        batch = torch.randint(0, config.vocab_size, (2, 257), generator=g)
        forward_backward(model, batch, 2)
        opt.step()
        opt.zero_grad(set_to_none=True)
    whole = peak_rss() - base
    both = [None] * d.world
    dist.all_gather_object(both, {"rank": d.rank, "loaded": loaded, "loaded_anon": loaded_anon, "whole": whole})
    if d.is_main:
        n = sum(p.numel() for p in model.parameters()) if mode == "before" else None
        Path(out).write_text(json.dumps({"mode": mode, "ranks": both, "params": n}))
    dist.destroy_process_group()


def run(folder: Path, mode: str, tmp: Path) -> dict:
    out = tmp / f"{mode}.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", __file__,
                    "--worker", str(folder), mode, str(out)], env=env, check=True)
    return json.loads(out.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--modes", nargs="+", choices=["before", "after"], default=["before", "after"])
    args = p.parse_args()
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**SHAPE))
        n = sum(p.numel() for p in model.parameters())
        model.to(torch.bfloat16).save_pretrained(tmp / "model", max_shard_size="200MB")
        del model
        results = {mode: run(tmp / "model", mode, tmp) for mode in args.modes}
    gib = 2 ** 30
    weights = 4 * n  # the fp32 model
    print(f"\nLlama {n / 1e6:.0f}M params, fp32 weights {weights / gib:.2f} GiB; 2 CPU processes (gloo); "
          "peak RSS above each rank's pre-model RSS")
    print(f"{'load path':<10}{'rank':>5}{'loaded+sharded':>16}{'x weights':>10}{'anon only':>10}{'x weights':>10}"
          f"{'whole run':>11}{'8 ranks: loaded':>17}{'8 ranks: run':>14}")
    rows = []
    for mode, res in results.items():
        for r in res["ranks"]:
            scaled_load = weights if mode == "before" else weights / 2  # what /world does to the load phase
            load8 = r["loaded"] - scaled_load + (weights if mode == "before" else weights / 8)
            run8 = r["whole"] - 16 * n / 2 + 16 * n / 8
            rows.append({"mode": mode, **r, "loaded_x_weights": r["loaded"] / weights, "loaded_8": load8,
                         "whole_8": run8})
            print(f"{mode:<10}{r['rank']:>5}{r['loaded'] / gib:>14.2f} G{r['loaded'] / weights:>10.2f}"
                  f"{r['loaded_anon'] / gib:>8.2f} G{r['loaded_anon'] / weights:>10.2f}"
                  f"{r['whole'] / gib:>9.2f} G{load8 / gib:>15.2f} G{run8 / gib:>12.2f} G")
    if args.json:
        args.json.write_text(json.dumps({"params": n, "weights_bytes": weights, "rows": rows}, indent=2))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:])
    else:
        main()
