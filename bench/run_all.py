"""Run every benchmark in bench/ in turn (each prints its own ratios)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    failures = 0
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"\n=== {script.name}", flush=True)
        failures += subprocess.call([sys.executable, str(script)]) != 0
    return failures


if __name__ == "__main__":
    sys.exit(main())
