"""The weight-change metric: |w_t - w_0| / |w_0| per decoder layer, with w_0 in host memory."""

from __future__ import annotations

import math

import torch

from train.metrics import WeightChange
from train.parallel import decoder_layers


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2))


def test_the_reference_is_a_host_copy_and_the_change_is_relative_per_layer():
    """w_0 is a copy in CPU memory (on a GPU: nothing proportional to the model stays on the device; the
    device check's peak-memory rows show it there), and each layer's value is its own relative change."""
    model = tiny_llama()
    layers = decoder_layers(model)
    metric = WeightChange(layers)
    refs = [t for per_layer in metric.w0 for t in per_layer]
    assert len(refs) == sum(1 for layer in layers for _ in layer.parameters())
    assert all(t.device.type == "cpu" and not t.requires_grad for t in refs)
    shared = {p.untyped_storage().data_ptr() for p in model.parameters()}
    assert not any(t.untyped_storage().data_ptr() in shared for t in refs)  # a copy, not the live weights
    assert metric.compute()["weight_change/layer_0"] == 0.0

    before = [[p.detach().clone() for p in layer.parameters()] for layer in layers]
    with torch.no_grad():
        for p in layers[0].parameters():
            p.mul_(1.5)  # layer 0 moves by half its norm
        next(layers[1].parameters()).add_(0.01)
    out = metric.compute()
    assert math.isclose(out["weight_change/layer_0"], 0.5, rel_tol=1e-6)
    want = math.sqrt(sum(float((p - b).double().pow(2).sum()) for p, b in zip(layers[1].parameters(), before[1]))
                     / sum(float(b.double().pow(2).sum()) for b in before[1]))
    assert math.isclose(out["weight_change/layer_1"], want, rel_tol=1e-6)
    assert math.isclose(out["weight_change/bottom_top_ratio"], 0.5 / want, rel_tol=1e-6)
