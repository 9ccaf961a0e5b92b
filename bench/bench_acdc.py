"""ACDC speed: the reference (one full forward per evaluated edge) vs the fast variant.

Both must return the same edge set. Prints plain time, fast time, their ratio (target <= 0.2;
wall clock and, for a shared machine, process CPU time), forward counts and peak memory. Default: a random GPT-2 (3 layers, 4 heads, d_model 128) and a
12-token prompt; about a minute on 2 CPU cores.

    python bench/bench_acdc.py [--layers 3 --heads 4 --d-model 128 --tau 0.001 --device cpu --json]
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

PROMPT = "The official language of France is the language of the people called"


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    from kcircuits.circuits.acdc import acdc
    from kcircuits.lm.random_models import random_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="gpt2", choices=["gpt2", "llama"])
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--tau", type=float, default=0.001)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = random_model(args.family, n_layers=args.layers, n_heads=args.heads, d_model=args.d_model,
                         n_kv_heads=args.heads // 2 if args.family == "llama" else None, device=args.device)
    tokens = model.tokenize(PROMPT)
    target = model.first_token_id(" French")
    acdc(model, tokens, target, float("inf"), fast=True)  # warm-up (allocations, kernels)
    acdc(model, tokens, target, float("inf"), fast=False)
    if model.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(model.device)
    t, c = time.perf_counter(), time.process_time()
    fast = acdc(model, tokens, target, args.tau, fast=True, batch_size=args.batch_size)
    t_fast, c_fast = time.perf_counter() - t, time.process_time() - c
    peak_fast = _peak_mb(model.device)
    t, c = time.perf_counter(), time.process_time()
    plain = acdc(model, tokens, target, args.tau, fast=False)
    t_plain, c_plain = time.perf_counter() - t, time.process_time() - c
    peak = _peak_mb(model.device)
    same = torch.equal(fast.edge_mask, plain.edge_mask)
    out = {
        "model": f"random {args.family} L{args.layers} H{args.heads} d{args.d_model}", "device": str(model.device),
        "tokens": int(tokens.shape[1]), "tau": args.tau, "total_edges": plain.graph.n_edges,
        "evaluated": plain.evaluated, "skipped": plain.skipped, "kept": plain.kept,
        "plain_s": round(t_plain, 3), "fast_s": round(t_fast, 3), "ratio": round(t_fast / t_plain, 4),
        "plain_cpu_s": round(c_plain, 3), "fast_cpu_s": round(c_fast, 3), "cpu_ratio": round(c_fast / c_plain, 4),
        "plain_forwards": plain.forwards, "fast_forwards": fast.forwards, "tie_checks": fast.tie_checks,
        "same_edges": same, "peak_mb_after_fast": round(peak_fast, 1), "peak_mb": round(peak, 1),
    }
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            print(f"{key:>20}: {value}")
    if not same:
        raise SystemExit("fast and plain ACDC disagree")


if __name__ == "__main__":
    main()
