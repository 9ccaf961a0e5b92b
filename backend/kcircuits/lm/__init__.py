"""Everything that touches a model: registry (what can load), loader (how), worker (who runs it)."""
