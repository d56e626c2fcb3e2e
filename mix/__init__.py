"""mix: plan a token-budgeted mixture of domain data and replay, then build token shards."""
