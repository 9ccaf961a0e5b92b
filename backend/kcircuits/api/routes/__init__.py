"""One module per feature, each exposing ``router``."""
