"""The orchestration above the three stages: the embedded demo and `continua compare`.

The dependency graph reads one way: `continua/` is the shared base (recipe, readers, tokenizer,
atomic files); `curate/`, `mix/` and `train/` stand on it and never on each other's commands;
`workflow/` stands on all of them and nothing imports it.
"""
