"""python -m kcircuits: the CLI."""

from kcircuits.cli import main

main()
