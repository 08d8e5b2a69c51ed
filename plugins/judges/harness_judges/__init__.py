"""LLM judges as metrics: ``judge`` (a grade per output) and ``judge-pairwise`` (a preference between two outputs)."""
