"""curate: score every document for quality (fastText, perplexity, heuristics, dedup), select later."""
