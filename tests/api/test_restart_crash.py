"""Permalinks survive restarts without recomputation; kill -9 during writes leaves no corrupt rows."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from kcircuits.api.app import ROUTE_MODULES
from kcircuits.store import hash_key, key_from_provenance

REV = "sha256:" + "12" * 32
#: E1's POST /api/circuits exists: compute through it (and preload the model as the real server does).
HAS_CIRCUITS = "circuits" in ROUTE_MODULES and importlib.util.find_spec("kcircuits.api.routes.circuits") is not None
# The real app served by uvicorn (as `kcircuits serve`, which always preloads the default model).
SERVER = """
import sys, uvicorn
from kcircuits.api.app import create_app
uvicorn.run(create_app(preload=sys.argv[2] == "1"), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""
#: The app with ACDC's batches slowed to 0.3 s each (a long job on a tiny model), no preload.
SLOW_ACDC_SERVER = """
import sys, time, uvicorn
from kcircuits.api.app import create_app
from kcircuits.circuits import acdc
real_fast = acdc._Evaluator.fast
acdc._Evaluator.fast = lambda self, masks: time.sleep(0.3) or real_fast(self, masks)
uvicorn.run(create_app(preload=False), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""
WRITER = """
import os, random, sys, threading
from kcircuits.config import get_settings
from kcircuits.store import open_store
store = open_store(get_settings())
def write(worker):
    i = 0
    while True:
        i += 1
        request = {"model": "tiny-gpt2", "prompt": f"prompt {worker}-{i}", "method": "eap", "top_n": i}
        result = {"kind": "circuit", "scores": [random.random() for _ in range(6000)], "i": i}
        store.get_or_compute("circuit", request, sys.argv[1], lambda: result)
threads = [threading.Thread(target=write, args=(w,), daemon=True) for w in range(3)]
for t in threads: t.start()
print("writing", flush=True)
for t in threads: t.join()
"""
CIRCUIT_REQUEST = {"prompt": "The Eiffel Tower is in the city of", "target": " Paris", "method": "eap",
                   "ablation": "zero", "top_n": 10}


def _env(data_dir: Path) -> dict:
    env = dict(os.environ)
    env.update(KCIRCUITS_DATA_DIR=str(data_dir), KCIRCUITS_TEST_MODELS="1", KCIRCUITS_DEFAULT_MODEL="tiny-gpt2",
               KCIRCUITS_DEVICE="cpu", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    env.pop("KCIRCUITS_DATABASE_URL", None)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``uvicorn`` in a subprocess on a free port."""

    def __init__(self, data_dir: Path, script: str = SERVER):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-c", script, str(self.port), str(int(HAS_CIRCUITS))], env=_env(data_dir),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def wait(self, path: str = "/healthz", timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                if self.client.get(path).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{path} not ready in {timeout} s")

    def has_circuits(self) -> bool:
        return "post" in self.client.get("/openapi.json").json()["paths"].get("/api/circuits", {})

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stderr.close()


def _check_database(path: Path) -> int:
    """integrity_check ok; every row's JSON parses and its id is the hash of its provenance's id input."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("select id, result, provenance from results").fetchall()
    finally:
        conn.close()
    for rid, result, provenance in rows:
        json.loads(result)
        assert hash_key(key_from_provenance(json.loads(provenance))) == rid
    return len(rows)


def _post_loop(server: Server, worker: int, done: list, stop: threading.Event) -> None:
    """POST distinct circuit requests until the server dies (or ``stop`` is set)."""
    for i in range(10_000):
        if stop.is_set():
            return
        body = {**CIRCUIT_REQUEST, "prompt": f"The city number {worker}-{i} is in the country of", "random_seeds": 0}
        try:
            if server.client.post("/api/circuits", json=body).status_code == 200:
                done.append((worker, i))
        except httpx.TransportError:
            return


@pytest.mark.timeout(300)
def test_restart_serves_permalinks_without_recompute_then_survives_kill_9(tmp_path):
    """Server A computes a circuit and stops; server B serves the identical JSON from the store (no engine
    call: ``cached`` and the computed-results counter), then is killed with SIGKILL while POSTs are being
    computed and stored; the database then opens clean (integrity_check, every row's id re-derived)."""
    server = Server(tmp_path)
    try:
        server.wait("/healthz")
        if HAS_CIRCUITS:
            server.wait("/readyz")
            first_post = server.client.post("/api/circuits", json=CIRCUIT_REQUEST)
            assert first_post.status_code == 200, first_post.text
            rid = first_post.json()["id"]
            assert first_post.json()["cached"] is False
            assert server.client.get("/api/results/stats").json()["computed_results"] == 1
        else:  # E1's POST /api/circuits is not served: store a result directly
            from kcircuits.config import Settings
            from kcircuits.store import open_store

            store = open_store(Settings(data_dir=tmp_path, device="cpu"))
            rid = store.get_or_compute("circuit", {"model": "tiny-gpt2", **CIRCUIT_REQUEST}, REV,
                                       lambda: {"kind": "circuit", "nodes": [], "edges": [], "x": 0.1})["id"]
            store.close()
        before = server.client.get(f"/api/results/{rid}")
        assert before.status_code == 200
    finally:
        server.stop()

    server = Server(tmp_path)
    done, stop = [], threading.Event()
    try:
        server.wait("/healthz")
        after = server.client.get(f"/api/results/{rid}")
        assert after.status_code == 200 and after.content == before.content
        assert server.client.get(f"/c/{rid}").status_code == 200
        if HAS_CIRCUITS:
            server.wait("/readyz")
            again = server.client.post("/api/circuits", json=CIRCUIT_REQUEST)
            assert again.status_code == 200 and again.json()["cached"] is True and again.json()["id"] == rid
            assert {k: v for k, v in again.json().items() if k != "cached"} == \
                {k: v for k, v in first_post.json().items() if k != "cached"}
        assert server.client.get("/api/results/stats").json()["computed_results"] == 0
        if HAS_CIRCUITS:  # kill -9 while results are being computed and written
            threads = [threading.Thread(target=_post_loop, args=(server, w, done, stop), daemon=True)
                       for w in range(2)]
            for t in threads:
                t.start()
            deadline = time.time() + 60
            while len(done) < 4 and time.time() < deadline:
                time.sleep(0.02)
            os.kill(server.proc.pid, signal.SIGKILL)
            server.proc.wait()
            stop.set()
            for t in threads:
                t.join(timeout=30)
            assert len(done) >= 4
    finally:
        stop.set()
        server.stop(signal.SIGKILL)
    n = _check_database(tmp_path / "kcircuits.sqlite")
    assert n >= 1 + len(done)
    from kcircuits.config import Settings
    from kcircuits.store import open_store

    store = open_store(Settings(data_dir=tmp_path, device="cpu"))  # reopened (and migrated) as on start
    assert store.check_integrity() == [] and store.count() == n
    assert json.dumps(store.get(rid), sort_keys=True) == json.dumps(before.json(), sort_keys=True)
    store.close()


def test_kill_9_while_writing_leaves_no_corrupt_rows(tmp_path):
    """A writer process (3 threads, ~100 kB results) is killed mid-stream, twice; then the store opens clean."""
    from kcircuits.config import Settings
    from kcircuits.store import open_store

    db = tmp_path / "kcircuits.sqlite"
    counts = []
    for _ in range(2):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, REV], env=_env(tmp_path), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"writing", proc.stderr.read().decode()[-2000:]
        start = counts[-1] if counts else 0
        deadline = time.time() + 30
        while time.time() < deadline:
            conn = sqlite3.connect(db, timeout=10)
            n = conn.execute("select count(*) from results").fetchone()[0]
            conn.close()
            if n >= start + 15:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        counts.append(_check_database(db))
    assert counts[0] >= 15 and counts[1] >= counts[0] + 15
    store = open_store(Settings(data_dir=tmp_path, device="cpu"))
    assert store.check_integrity() == [] and store.count() == counts[-1]
    store.close()


@pytest.mark.timeout(120)
def test_jobs_running_at_kill_9_are_interrupted_after_restart(tmp_path):
    """kill -9 while an ACDC job runs and a second one waits: after the restart neither shows
    "running" or "queued" forever; both read "interrupted", and DELETE on them answers."""
    server = Server(tmp_path, SLOW_ACDC_SERVER)
    try:
        server.wait("/healthz")
        ids = []
        for prompt in ("The Eiffel Tower is in the city of", "The Louvre is in the city of"):
            ids.append(server.client.post("/api/jobs", json={"kind": "acdc", "params": {
                "prompt": prompt, "target": " Paris", "tau": -1e9}}).json()["id"])
            deadline = time.time() + 60
            while server.client.get(f"/api/jobs/{ids[0]}").json()["progress"] == 0 and time.time() < deadline:
                time.sleep(0.1)  # the first job holds the worker: the second waits behind it
        time.sleep(1.2)  # past the store's once-a-second throttle of progress writes
        assert server.client.get(f"/api/jobs/{ids[0]}").json()["status"] == "running"
    finally:
        server.stop(signal.SIGKILL)
    with sqlite3.connect(tmp_path / "kcircuits.sqlite") as conn:  # what the dead process left
        left = dict(conn.execute("select id, status from jobs").fetchall())
    assert left[ids[0]] == "running" and left[ids[1]] in {"queued", "running"}
    server = Server(tmp_path, SLOW_ACDC_SERVER)
    try:
        server.wait("/healthz")
        for job_id in ids:
            job = server.client.get(f"/api/jobs/{job_id}").json()
            assert job["status"] == "interrupted" and job["error"]["type"] == "interrupted", job
            deleted = server.client.delete(f"/api/jobs/{job_id}")
            assert deleted.status_code == 200 and deleted.json()["status"] == "interrupted"
    finally:
        server.stop()
