"""Models built from the layers: language models and sequence-to-sequence models."""
