"""Peak memory per rank of `train run`: loading a base model the old way (every rank loads the whole
model, then shards) against the new one (meta device, shard, each rank reads its slices), and the whole
run, accounted for: sharded state, activations, gradients held between micro-batches, the weight-change
metric's reference, against the peak.

A ~134M-parameter Llama (hidden 768, 12 layers, vocab 32000, untied; bf16 safetensors on disk) is
loaded by 2 processes (torchrun, gloo, CPU). Per rank: the peak RSS above the process's RSS before the
model is built (imports, the loading code's included, and the process group excluded), (1) until the
model is loaded and sharded, before the optimizer exists (also its anonymous part alone: RSS counts the
mmapped safetensors pages), and (2) over the whole run as `train run` trains: train.loss.CausalLMLoss,
2 steps of 2 x 256 tokens as 2 micro-batches, gradient clipping, fused AdamW, the weight-change metric.
Modes: `before` / `after` load the old / new way; `after` reduce-scatters gradients every micro-batch
(the default), `nosync` only on the last ([parallel] sync_grads_every_microbatch = false).
The second table says where the bytes go: the sharded state (16 bytes x this rank's parameters: fp32
weights, gradients, AdamW's two moments), the activations autograd keeps for one micro-batch, the
gradient bytes held between micro-batches, the weight-change reference (host memory on a GPU, RSS here),
tensors alive after a step, and the peak over the run against state + activations.
The 8-rank column is arithmetic, not a run: what scales with 1/world (fp32 weights while loading;
weights, gradients and AdamW moments over the run, 16 bytes/param) is moved from /2 to /8, the rest
(activations, one tensor in flight, allocator slack) kept as measured.

The ranks run with a fixed glibc mmap threshold, so that freed tensors leave RSS as they leave a GPU's
caching allocator (`--malloc-default`: glibc's own policy, whose heap keeps freed pages; see
FIXED_MMAP_THRESHOLD).

    nice -n 10 python bench/bench_load_memory.py [--small] [--modes after nosync] [--malloc-default] [--json out.json]
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
SMALL = {"vocab_size": 4000, "hidden_size": 128, "intermediate_size": 344, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 4}
BATCH, SEQ, MICRO, STEPS = 2, 256, 1, 2  # per rank: 2 sequences of 256 tokens as 2 micro-batches, 2 steps


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


def worker(folder: str, mode: str, out: str, micro: str = "1", sync: str = "1") -> None:
    """One rank: load the way `mode` says, measure; then train as `train run` does (CausalLMLoss, micro-
    batches with the gradient sync `sync` says, clipping, fused AdamW, the weight-change metric) and measure
    again; rank 0 writes all ranks' numbers."""
    import torch
    import torch.distributed as dist

    from train.loop import _fast_adamw, forward_backward
    from train.memory import activation_bytes, held_between_microbatches, live_tensor_bytes
    from train.metrics import WeightChange
    from train.parallel import decoder_layers, init_distributed, prepare_model
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
        net = prepare_model(model, d, bf16=False)
    else:
        model = build_empty(config)
        net = prepare_model(model, d, bf16=False)
        load_weights(model, source.path, source.kind)
    loaded = peak_rss() - base
    loaded_anon = sampler.stop() - base_anon
    phases = {"loaded": live_tensor_bytes()}
    local = sum((p.to_local() if hasattr(p, "to_local") else p).numel() for p in model.parameters())
    micro, sync = int(micro), sync == "1"
    g = torch.Generator().manual_seed(d.rank)
    batches = [torch.randint(0, config.vocab_size, (BATCH, SEQ + 1), generator=g) for _ in range(STEPS)]
    acts = activation_bytes(net, batches[0][:micro, :-1], batches[0][:micro, 1:])
    sampler = AnonPeak()
    weights = WeightChange(decoder_layers(model))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **_fast_adamw(torch.device("cpu")))
    phases["weight_change_ref"] = live_tensor_bytes() - phases["loaded"]
    held = max(held_between_microbatches(net, lambda: forward_backward(net, batches[0], micro, sync)))
    for i, batch in enumerate(batches):
        if i:
            forward_backward(net, batch, micro, sync)
        phases["grads"] = live_tensor_bytes()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    phases["after_step"] = live_tensor_bytes()
    weights.compute()
    whole = peak_rss() - base
    whole_anon = sampler.stop() - base_anon
    both = [None] * d.world
    dist.all_gather_object(both, {"rank": d.rank, "loaded": loaded, "loaded_anon": loaded_anon, "whole": whole,
                                  "whole_anon": whole_anon, "local_params": local, "activations": acts,
                                  "held_between_microbatches": held, "phases": phases})
    if d.is_main:
        n = sum(p.numel() for p in model.parameters()) if mode == "before" else None
        Path(out).write_text(json.dumps({"mode": mode, "ranks": both, "params": n}))
    dist.destroy_process_group()


# glibc's malloc raises its mmap threshold after the first large free, so later tensors below 32 MiB come
# from the heap and their pages stay in RSS after they are freed (measured: 3.3 GB peak RSS against 1.8 GB
# with a fixed threshold, same run). A fixed threshold makes RSS follow the tensors, as a GPU's caching
# allocator follows them; --malloc-default measures glibc's default instead.
FIXED_MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}


def run(folder: Path, mode: str, tmp: Path, malloc_default: bool = False) -> dict:
    out = tmp / f"{mode}.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", **({} if malloc_default else FIXED_MMAP_THRESHOLD),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    load, sync = ("before", "1") if mode == "before" else ("after", "0" if mode == "nosync" else "1")
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", __file__,
                    "--worker", str(folder), load, str(out), str(MICRO), sync], env=env, check=True)
    return json.loads(out.read_text())


def main() -> None:
    global SHAPE
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--modes", nargs="+", choices=["before", "after", "nosync"], default=["before", "after", "nosync"])
    p.add_argument("--small", action="store_true", help=f"a {SMALL['hidden_size']}-wide Llama (seconds, for the suite)")
    p.add_argument("--malloc-default", action="store_true",
                   help="glibc's default malloc policy in the ranks (RSS then keeps freed heap pages)")
    args = p.parse_args()
    if args.small:
        SHAPE = {**SHAPE, **SMALL}
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**SHAPE))
        n = sum(p.numel() for p in model.parameters())
        model.to(torch.bfloat16).save_pretrained(tmp / "model", max_shard_size="200MB")
        del model
        results = {mode: run(tmp / "model", mode, tmp, args.malloc_default) for mode in args.modes}
    gib, mib = 2 ** 30, 2 ** 20
    weights = 4 * n  # the fp32 model
    print(f"\nLlama {n / 1e6:.1f}M params, fp32 weights {weights / gib:.2f} GiB; 2 CPU processes (gloo); "
          "peak RSS above each rank's pre-model RSS; malloc: "
          f"{'glibc default' if args.malloc_default else 'fixed mmap threshold (RSS follows the tensors)'}")
    print(f"{'load path':<10}{'rank':>5}{'loaded+sharded':>16}{'x weights':>10}{'anon only':>10}{'x weights':>10}"
          f"{'whole run':>11}{'8 ranks: loaded':>17}{'8 ranks: run':>14}")
    rows = []
    for mode, res in results.items():
        for r in res["ranks"]:
            scaled_load = weights if mode == "before" else weights / 2  # what /world does to the load phase
            load8 = r["loaded"] - scaled_load + (weights if mode == "before" else weights / 8)
            run8 = r["whole"] - 16 * n / 2 + 16 * n / 8
            state = 16 * r["local_params"]  # fp32 weights, gradients, AdamW's two moments: this rank's shards
            rows.append({"mode": mode, **r, "loaded_x_weights": r["loaded"] / weights, "loaded_8": load8,
                         "whole_8": run8, "sharded_state": state,
                         "whole_x_state_acts": r["whole"] / (state + r["activations"])})
            print(f"{mode:<10}{r['rank']:>5}{r['loaded'] / gib:>14.2f} G{r['loaded'] / weights:>10.2f}"
                  f"{r['loaded_anon'] / gib:>8.2f} G{r['loaded_anon'] / weights:>10.2f}"
                  f"{r['whole'] / gib:>9.2f} G{load8 / gib:>15.2f} G{run8 / gib:>12.2f} G")
    print(f"\nWhere the bytes go over the run (MiB per rank; batch {BATCH} x {SEQ}, micro-batch {MICRO}, {STEPS} steps; "
          "'after' syncs gradients every micro-batch, 'nosync' only on the last):")
    print(f"{'mode':<8}{'rank':>5}{'state 16B/p':>12}{'activations':>12}{'grads held':>11}{'w0 (host)':>10}"
          f"{'tensors at step':>16}{'peak RSS':>10}{'peak anon':>10}{'peak / (state + acts)':>23}")
    for row in rows:
        if row["mode"] == "before":
            continue
        ph = row["phases"]
        print(f"{row['mode']:<8}{row['rank']:>5}{row['sharded_state'] / mib:>12.0f}{row['activations'] / mib:>12.0f}"
              f"{row['held_between_microbatches'] / mib:>11.0f}{ph['weight_change_ref'] / mib:>10.0f}"
              f"{ph['after_step'] / mib:>16.0f}{row['whole'] / mib:>10.0f}{row['whole_anon'] / mib:>10.0f}"
              f"{row['whole_x_state_acts']:>22.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"params": n, "weights_bytes": weights, "rows": rows}, indent=2))


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:])
    else:
        main()
