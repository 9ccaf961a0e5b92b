"""Knowledge neurons: localisation of facts next to syntax (Niu et al.), with IG cost.

For known LRE facts (with their paraphrase templates) and syntax minimal pairs (determiner-noun
and subject-verb number agreement, bench/make_syntax_pairs.py), the same attribution (IG, m steps,
baseline 0), the same KN filters, and suppress / enhance edits of the KNs on each group's first
prompt. Prints one markdown table (facts vs syntax) and the KN layer histograms, writes JSON and a
PNG of the layer distributions (``--replot`` redraws it from the JSON).

    python bench/neurons.py --model smollm2-135m --n-facts 20 --n-syntax 20 --out bench/results/neurons.json
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from timing import median_time


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table(summary: dict) -> str:
    """The comparison as markdown: one column per set."""
    names = list(summary)
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]

    def row(label, pick, digits=2):
        lines.append(f"| {label} | " + " | ".join(_fmt(pick(summary[n]), digits) for n in names) + " |")

    row("groups", lambda s: s["n_groups"])
    row("groups with KNs", lambda s: s["with_kns"])
    row("mean KNs per group", lambda s: s["mean_kns"], 1)
    row("mean KN layer", lambda s: s["mean_kn_layer"], 1)
    row("top-10 share of attribution", lambda s: s["top10_share"])
    row("effective neurons", lambda s: s["effective_neurons"], 1)
    for mode in ("suppress", "enhance"):
        row(f"{mode}: top-1 flip rate", lambda s, m=mode: s[m]["top1_flip_rate"])
        row(f"{mode}: pair flip rate", lambda s, m=mode: s[m]["pair_flip_rate"])
        row(f"{mode}: mean relative P change", lambda s, m=mode: s[m]["mean_relative_change"])
    return "\n".join(lines)


def histograms(summary: dict) -> str:
    return "\n".join(f"{name}: {s['layer_histogram']}" for name, s in summary.items())


def plot(summary: dict, path: Path) -> None:
    """KN layer distributions (share of each set's KNs per layer) of facts and syntax, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.2))
    names = [n for n in ("facts", "syntax:det_noun", "syntax:subj_verb") if n in summary]
    width = 0.8 / max(1, len(names))
    for k, name in enumerate(names):
        hist = summary[name]["layer_histogram"]
        total = sum(hist) or 1
        ax.bar([i + k * width for i in range(len(hist))], [c / total for c in hist], width=width, label=name)
    ax.set_xlabel("layer")
    ax.set_ylabel("share of KNs")
    ax.set_title("Knowledge-neuron layers: facts vs syntax")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n-facts", type=int, default=20)
    parser.add_argument("--n-syntax", type=int, default=20)
    parser.add_argument("--max-prompts", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--path", default="joint", choices=["joint", "layer"])
    parser.add_argument("--threshold", type=float, default=0.2)
    parser.add_argument("--share", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="bench/results/neurons.json")
    parser.add_argument("--plot", default="bench/results/neurons_layers.png", help="PNG of the KN layer distributions")
    parser.add_argument("--replot", action="store_true", help="only redraw --plot from an existing --out")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.replot:
        plot(json.loads(Path(args.out).read_text())["summary"], Path(args.plot))
        return
    torch.set_num_threads(args.threads)
    from kcircuits.circuits.neurons import (
        IGParams,
        KNParams,
        compare_localisation,
        integrated_gradients,
        last_hidden,
    )
    from kcircuits.config import get_settings
    from kcircuits.lm.loader import load_model

    model = load_model(args.model, get_settings())
    ig = IGParams(steps=args.steps, path=args.path)
    kn = KNParams(threshold=args.threshold, share=args.share)
    tokens = model.tokenize("The capital of France is the city of")
    target = model.first_token_id(" Paris")
    t_fwd = median_time(lambda: last_hidden(model, tokens))
    t_ig = median_time(lambda: integrated_gradients(model, tokens, target, ig), repeats=1)
    start = time.perf_counter()
    report = compare_localisation(model, args.n_facts, args.n_syntax, ig=ig, kn=kn, max_prompts=args.max_prompts,
                                  progress=lambda i, n, msg: logging.info("%d/%d %s", i, n, msg))
    report["timing"] = {"forward_s": t_fwd, "ig_s": t_ig, "ig_over_forward": t_ig / t_fwd,
                        "prompt_tokens": int(tokens.shape[1]), "device": str(model.device),
                        "threads": args.threads, "total_s": time.perf_counter() - start}
    report["revision"] = model.revision
    print(table(report["summary"]))
    print()
    print("KN layer histograms (layer 0 first):")
    print(histograms(report["summary"]))
    print(f"\nIG (m={args.steps}, {args.path}) {t_ig:.2f} s / one forward {t_fwd:.3f} s = {t_ig / t_fwd:.1f}x "
          f"({tokens.shape[1]} tokens, {model.device}, {args.threads} thread(s))")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    plot(report["summary"], Path(args.plot))


if __name__ == "__main__":
    main()
