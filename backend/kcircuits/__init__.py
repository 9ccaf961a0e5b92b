"""kcircuits: explore knowledge circuits in transformer language models."""

__version__ = "0.1.0"
