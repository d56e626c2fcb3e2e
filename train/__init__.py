"""train: a compact FSDP2 loop with CPT schedules, multi-set evaluation and stability-gap metrics."""
