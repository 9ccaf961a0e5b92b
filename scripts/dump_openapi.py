"""Write the app's OpenAPI schema to frontend/src/api/openapi.json (the TypeScript client's source).

Builds the app with default settings (no environment, no .env, no model loaded) so the schema is
the same on every machine. Usage: python scripts/dump_openapi.py [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = ROOT / "frontend" / "src" / "api" / "openapi.json"
REGENERATE = "python scripts/dump_openapi.py && (cd frontend && npm run gen:api)"


def current_schema_text() -> str:
    """The app's schema as committed text: sorted keys, two-space indent, trailing newline."""
    from kcircuits.api.app import create_app
    from kcircuits.config import Settings

    app = create_app(Settings.model_construct(), preload=False)  # defaults only; the worker is never started
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed file differs")
    args = parser.parse_args()
    text = current_schema_text()
    if args.check:
        same = SCHEMA_PATH.exists() and SCHEMA_PATH.read_text() == text
        if not same:
            print(f"{SCHEMA_PATH} is stale: run {REGENERATE}", file=sys.stderr)
        return 0 if same else 1
    SCHEMA_PATH.write_text(text)
    print(f"wrote {SCHEMA_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
