"""Circuit engine cost relative to one plain forward, for a ~12-token prompt.

Prints, on SmolLM2-135M (when its package is installed) and on a GPT-2-small-shaped random model:
one forward, EAP / forward (target <= 5), EAP-IG (m = 5) / forward (target <= 15), the
evaluation of a 1% circuit with 3 random circuits (6 masked runs, batched) / forward, and peak
memory (RSS). Usage: python bench/bench_circuits.py [--threads N]
"""

from __future__ import annotations

import argparse

import torch

from timing import median_time, peak_rss_mb

PROMPT = "The Eiffel Tower, a famous landmark, is located in the city of"
CORRUPT = "The Colosseum, a famous landmark, is located in the city of"




def bench_model(name: str, model) -> None:
    from kcircuits.circuits.attribution import ablated_outputs_for, attribute
    from kcircuits.circuits.evaluate import evaluate_circuit
    from kcircuits.circuits.graph import get_graph
    from kcircuits.circuits.metrics import make_metric
    from kcircuits.circuits.patching import sender_outputs
    from kcircuits.circuits.select import select

    graph = get_graph(model.arch)
    tokens, corrupt = model.tokenize(PROMPT), model.tokenize(CORRUPT)
    if corrupt.shape != tokens.shape:
        corrupt = tokens.flip(-1)  # same length; only the cost matters here
    target = model.first_token_id(" Paris")
    metric = make_metric("logit_diff", [target], foil_ids=[model.first_token_id(" Rome")])
    clean = sender_outputs(model, tokens, graph)
    ablated = ablated_outputs_for(model, tokens, graph, "patch", corrupt)

    def forward():
        with torch.inference_mode():
            model.logits(tokens)

    t_fwd = median_time(forward)
    t_eap = median_time(lambda: attribute(model, tokens, graph, metric, ablated, "eap", clean_outputs=clean))
    t_ig = median_time(lambda: attribute(model, tokens, graph, metric, ablated, "eap-ig", ig_steps=5,
                                          clean_outputs=clean), repeats=1)
    scores = attribute(model, tokens, graph, metric, ablated, "eap-ig", clean_outputs=clean)
    mask = select(scores, graph, top_n=max(10, graph.n_edges // 100))
    t_eval = median_time(lambda: evaluate_circuit(model, tokens, graph, mask, ablated, metric,
                                                   torch.tensor([target]), random_seeds=3), repeats=1)
    print(f"{name}: {tokens.shape[1]} tokens, {graph.n_edges:,} edges, {torch.get_num_threads()} threads")
    print(f"  one forward              {t_fwd * 1000:9.1f} ms")
    print(f"  EAP                      {t_eap * 1000:9.1f} ms   {t_eap / t_fwd:5.1f} x forward (target <= 5)")
    print(f"  EAP-IG (m=5)             {t_ig * 1000:9.1f} ms   {t_ig / t_fwd:5.1f} x forward (target <= 15)")
    print(f"  evaluate 1% circuit      {t_eval * 1000:9.1f} ms   {t_eval / t_fwd:5.1f} x forward (6 masked runs)")
    print(f"  peak RSS so far          {peak_rss_mb():9.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from kcircuits.config import Settings
    from kcircuits.errors import ModelUnavailable
    from kcircuits.lm.loader import load_model
    from kcircuits.lm.random_models import random_model

    try:
        bench_model("SmolLM2-135M", load_model("smollm2-135m", Settings(device="cpu")))
    except ModelUnavailable as exc:
        print(f"SmolLM2-135M skipped: {exc.message}")
    bench_model("GPT-2-small-shaped random", random_model("gpt2", n_layers=12, n_heads=12, d_model=768))


if __name__ == "__main__":
    main()
