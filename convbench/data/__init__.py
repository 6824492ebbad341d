"""Package data: DeepBench shape lists (see the README for their source)."""
