"""The science: pure functions over a LoadedModel and tensors (no web imports)."""
