"""The Knowledge Circuits paper's Table 1 layout on SmolLM2: one circuit per LRE relation, found on
the validation facts, with Hit@10 of the original model, the circuit alone and random circuits of
the same size, on the validation and the test split.

Two settings, labelled in every row: the paper's (zero ablation, MatchNLL: edges outside the
circuit are zeroed) and the patched variant (edges outside the circuit take a same-relation
counterfactual's activations). Default method: the engine's eap-ig-refine. Rows are also written
as JSON. Relations: the fidelity fact set's by default (``--relations`` to choose).

Usage: python bench/table1.py [--relations a,b] [--n 10] [--ablations zero,patch] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_RELATIONS = "country_capital_city,country_language,landmark_in_country,company_hq"


def main() -> int:
    import torch

    from kcircuits.circuits.relation import format_table, run_relation
    from kcircuits.config import Settings
    from kcircuits.lm.loader import load_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--relations", default=DEFAULT_RELATIONS)
    parser.add_argument("--n", type=int, default=10, help="facts per split")
    parser.add_argument("--method", default="eap-ig-refine")
    parser.add_argument("--ablations", default="zero,patch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=str(HERE / "results" / "table1.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model("smollm2-135m", Settings(device="cpu"))
    rows, start = [], time.perf_counter()
    for ablation in args.ablations.split(","):
        metric = "match_nll"
        for name in args.relations.split(","):
            row = run_relation(model, name, n=args.n, method=args.method, ablation=ablation, metric=metric)
            row.pop("circuit_edges", None)
            rows.append(row)
        sys.stdout.write(f"\n{ablation} ablation ({'the paper' if ablation == 'zero' else 'patched variant'}), "
                         f"{metric}, {args.method}:\n")
        sys.stdout.write(format_table([r for r in rows if r["ablation"] == ablation]) + "\n")
    sys.stdout.write(f"\n{time.perf_counter() - start:.0f} s\n")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
