"""continua: continual pre-training of LLMs, from raw text to a checkpoint with a stability-gap report.

Shared pieces live here (recipe loading, atomic files, document reading, tokenizer loading);
the three stages are the packages `curate`, `mix` and `train`.
"""

__version__ = "0.1.0"
