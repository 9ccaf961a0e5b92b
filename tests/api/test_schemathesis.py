"""schemathesis over the whole API (every check, a fixed seed, bounded examples, tiny models).

The CLI runs as ``schemathesis run --checks all`` against a real uvicorn on loopback serving the
app as tests/api/conftest.py builds it (tiny random GPT-2 and Llama, default tiny-gpt2), through
all its phases (examples, coverage, fuzzing, stateful). No operation is excluded. Any failure
fails the test with schemathesis' own report. schemathesis.toml beside this file says which model-
and cross-field rules (422) the positive-data check accepts, and why.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kcircuits.api.app import create_app
from kcircuits.lm.worker import ModelWorker

from .live import serve_live

log = logging.getLogger(__name__)

CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = 20261202
MAX_EXAMPLES = 5  # per operation and phase: the whole run stays near a minute on 2 cores


@pytest.fixture
def tiny_server(api_settings, tiny_gpt2, tiny_llama):
    worker = ModelWorker(api_settings)
    worker.register("tiny-gpt2", tiny_gpt2)
    worker.register("tiny-llama", tiny_llama)
    yield from serve_live(create_app(api_settings, worker=worker, preload=False))


@pytest.mark.timeout(400)
def test_schemathesis_finds_no_failures(tiny_server, tmp_path):
    app, (host, port) = tiny_server
    n_operations = sum(len(ops) for ops in app.openapi()["paths"].values())
    cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run", f"http://{host}:{port}/openapi.json",
           "--checks", "all", "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES), "--workers", "1",
           "--generation-database", "none", "--request-timeout", "60", "--no-color",
           "--report", "junit", "--report-dir", str(tmp_path / "report")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SCHEMATHESIS_HOOKS": ""}
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=360, cwd=tmp_path, env=env)
    out = run.stdout + run.stderr
    summary = out[out.find("= SUMMARY ="):] if "= SUMMARY =" in out else out[-3000:]
    log.info("schemathesis summary:\n%s", summary)
    assert run.returncode == 0, out[-20000:]
    assert f"Selected: {n_operations}/{n_operations}" in summary and f"Tested: {n_operations}" in summary, summary
