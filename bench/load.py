"""Interactive latency under load: lens and circuit requests (p50, p95) on an idle server, then
while an ACDC job runs and 100 SSE clients hold open event streams, on loopback.

Starts ``kcircuits``' app under uvicorn in a subprocess (a fresh data dir, so no stored result
is reused; every request uses a new prompt). Usage:
    python bench/load.py [--model smollm2-135m] [--lens 12] [--circuits 4] [--sse 100]
Writes bench/results/load.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

log = logging.getLogger("bench.load")
ROOT = Path(__file__).resolve().parent.parent
SERVER = """
import sys, uvicorn
from kcircuits.api.app import create_app
uvicorn.run(create_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""
CITIES = ["Paris", "Rome", "Berlin", "Madrid", "Vienna", "Lisbon", "Athens", "Dublin", "Oslo", "Prague",
          "Warsaw", "Sofia", "Riga", "Bern", "Helsinki", "Budapest", "Zagreb", "Tallinn", "Vilnius", "Minsk"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _percentiles(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"n": len(ordered), "p50_s": statistics.median(ordered), "p95_s": p95, "max_s": ordered[-1]}


def _timed(client: httpx.Client, method: str, path: str, **kwargs) -> float:
    start = time.perf_counter()
    res = client.request(method, path, **kwargs)
    elapsed = time.perf_counter() - start
    if res.status_code != 200:
        raise RuntimeError(f"{method} {path}: {res.status_code} {res.text[:300]}")
    return elapsed


def measure(client: httpx.Client, phase: str, n_lens: int, n_circuits: int) -> dict[str, dict[str, float]]:
    """Latencies of lens, circuit and /healthz requests; each lens/circuit prompt is new."""
    lens, circuits, health = [], [], []
    for i in range(n_lens):
        prompt = f"In the {phase} phase, request {i}: the capital of {CITIES[i % len(CITIES)]}'s country is"
        lens.append(_timed(client, "POST", "/api/lens", json={"prompt": prompt, "top_k": 5}))
        health.append(_timed(client, "GET", "/healthz"))
    for i in range(n_circuits):
        prompt = f"The city of {CITIES[i % len(CITIES)]} ({phase}, {i}) lies in the country of"
        body = {"prompt": prompt, "target": " France", "method": "eap", "ablation": "zero", "top_n": 50,
                "random_seeds": 0, "max_edges_returned": 50, "with_heads": False}
        circuits.append(_timed(client, "POST", "/api/circuits", json=body))
    return {"lens": _percentiles(lens), "circuit": _percentiles(circuits), "healthz": _percentiles(health)}


class SseClients:
    """``n`` raw event-stream connections, drained by one selector thread."""

    def __init__(self, port: int, job_id: str, n: int):
        self.selector = selectors.DefaultSelector()
        self.events = 0
        self.stop = threading.Event()
        for _ in range(n):
            conn = socket.create_connection(("127.0.0.1", port), timeout=10)
            conn.sendall(f"GET /api/jobs/{job_id}/events HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
            conn.setblocking(False)
            self.selector.register(conn, selectors.EVENT_READ)
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        while not self.stop.is_set():
            for key, _ in self.selector.select(timeout=0.2):
                try:
                    data = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                self.events += data.count(b"event: ")
                if not data:
                    self.selector.unregister(key.fileobj)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="the server's default model")
    parser.add_argument("--lens", type=int, default=12, help="lens requests per phase")
    parser.add_argument("--circuits", type=int, default=4, help="circuit requests per phase")
    parser.add_argument("--sse", type=int, default=100, help="open event-stream clients while loaded")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "load.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    port = _free_port()
    data_dir = tempfile.mkdtemp(prefix="kcircuits-load-")
    env = {**os.environ, "KCIRCUITS_DATA_DIR": data_dir, "KCIRCUITS_DEFAULT_MODEL": args.model,
           "KCIRCUITS_TEST_MODELS": "1", "KCIRCUITS_DEVICE": os.environ.get("KCIRCUITS_DEVICE", "cpu"),
           "PYTHONPATH": str(ROOT / "backend")}
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], env=env)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600)
    try:
        deadline = time.time() + 600
        while time.time() < deadline:
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            raise TimeoutError("the server did not become ready")
        measure(client, "warm-up", 2, 1)
        log.info("idle phase")
        idle = measure(client, "idle", args.lens, args.circuits)

        params = {"prompt": "The Eiffel Tower is located in the city of", "target": " Paris", "tau": -1e9,
                  "max_edges": 10_000_000}  # tau below every effect: ACDC tries every edge (a long job)
        job = client.post("/api/jobs", json={"kind": "acdc", "params": params}).json()
        while client.get(f"/api/jobs/{job['id']}").json()["progress"] == 0:
            time.sleep(0.2)
        streams = SseClients(port, job["id"], args.sse)
        log.info("loaded phase: ACDC job %s running, %d SSE clients", job["id"], args.sse)
        loaded = measure(client, "loaded", args.lens, args.circuits)
        status = client.get(f"/api/jobs/{job['id']}").json()
        streams.close()
        client.delete(f"/api/jobs/{job['id']}")
        if status["status"] != "running":
            log.warning("the ACDC job was %s before the loaded phase ended", status["status"])
    finally:
        client.close()
        proc.terminate()
        proc.wait(30)

    report = {"model": args.model, "sse_clients": args.sse, "acdc_progress_at_end": status["progress"],
              "cpu_count": os.cpu_count(), "idle": idle, "loaded": loaded,
              "date": time.strftime("%Y-%m-%d", time.gmtime())}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    lines = ["| request | idle p50 | idle p95 | loaded p50 | loaded p95 |", "|---|---|---|---|---|"]
    for name in ("lens", "circuit", "healthz"):
        i, ld = idle[name], loaded[name]
        lines.append(f"| {name} (n={i['n']}) | {i['p50_s']:.3f} s | {i['p95_s']:.3f} s | "
                     f"{ld['p50_s']:.3f} s | {ld['p95_s']:.3f} s |")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
