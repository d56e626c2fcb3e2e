"""MFU's two inputs: training FLOPs per token for any attention shape, and the GPU's datasheet peak."""

from __future__ import annotations

import pytest

from train.metrics import datasheet_peak
from train.model import attention_width, flops_per_token


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 NVL", 835e12),
    ("NVIDIA H200", 989e12), ("NVIDIA GH200 480GB", 989e12), ("NVIDIA A100-SXM4-80GB", 312e12),
    ("NVIDIA A100 80GB PCIe", 312e12), ("NVIDIA L40S", 362e12), ("NVIDIA L40", 181e12), ("NVIDIA L4", 121e12),
    ("NVIDIA A10G", 70e12), ("NVIDIA A10", 125e12), ("NVIDIA B200", 2250e12),
    ("NVIDIA GeForce RTX 4090", None), ("NVIDIA H20", None), ("NVIDIA A40", None),
])
def test_datasheet_peak_matches_whole_model_names_only(name, peak):
    assert datasheet_peak(name) == peak


def test_attention_flops_use_heads_times_head_dim_not_the_hidden_size():
    from transformers import LlamaConfig, LlamaForCausalLM

    # 4 heads of 32 = 128 wide attention on a hidden size of 48 (as Gemma/Qwen3 set head_dim themselves)
    cfg = LlamaConfig(vocab_size=100, hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=32, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    assert attention_width(cfg) == 128
    n = sum(p.numel() for p in model.parameters())
    assert flops_per_token(model, 64) == 6.0 * n + 12.0 * 2 * 128 * 64
    plain = LlamaConfig(vocab_size=100, hidden_size=48, num_attention_heads=4)  # head_dim defaults to 48 / 4
    assert attention_width(plain) == 48
