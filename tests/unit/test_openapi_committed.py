"""The committed frontend/src/api/openapi.json (source of the generated TypeScript client) matches the app."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _dump_module():
    spec = importlib.util.spec_from_file_location("dump_openapi", ROOT / "scripts" / "dump_openapi.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_openapi_matches_app():
    dump = _dump_module()
    assert dump.SCHEMA_PATH.exists(), f"{dump.SCHEMA_PATH} missing: run {dump.REGENERATE}"
    committed = json.loads(dump.SCHEMA_PATH.read_text())
    current = json.loads(dump.current_schema_text())
    stale = sorted(set(committed.get("paths", {})) ^ set(current.get("paths", {})))
    assert committed == current, (
        f"frontend/src/api/openapi.json differs from the app's schema (paths added/removed: {stale or 'none'}); "
        f"regenerate with: {dump.REGENERATE}")
