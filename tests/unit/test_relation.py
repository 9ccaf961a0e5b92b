"""LRE relations: dataset counts, prompts, splits, known facts, subject swaps, the Table 1 row."""

from __future__ import annotations

from collections import Counter

import pytest

from kcircuits.circuits.relation import (
    format_table,
    known_facts,
    last_logits,
    list_relations,
    load_relation,
    relation_facts,
    run_relation,
    same_length_subjects,
    split_facts,
    target_ranks,
)
from kcircuits.circuits.subject import subject_positions
from kcircuits.errors import BadRequest, NotFound


def test_dataset_counts():
    rows = list_relations()
    relations, samples = Counter(), Counter()
    for row in rows:
        relations[row["category"]] += 1
        samples[row["category"]] += row["n_samples"]
    assert relations == {"factual": 26, "commonsense": 8, "linguistic": 6, "bias": 7}
    assert samples == {"factual": 9696, "commonsense": 374, "linguistic": 806, "bias": 213}
    assert sum(samples.values()) == 11089
    rel = load_relation("country_capital_city")
    assert rel.template == "The capital of {} is the city of" and len(rel.samples) == 24
    assert rel.category == "factual"
    with pytest.raises(NotFound):
        load_relation("no_such_relation")


def test_facts_prompts_and_split(tiny_gpt2):
    rel = load_relation("country_capital_city")
    facts = relation_facts(tiny_gpt2, rel)
    france = next(f for f in facts if f.subject == "France")
    assert france.prompt == "The capital of France is the city of"
    assert france.target == " Paris" and france.target_id == tiny_gpt2.tokenizer(" Paris")["input_ids"][0]
    val, test = split_facts(facts)
    assert len(val) + len(test) == len(facts) and len(val) == 12
    assert not {f.subject for f in val} & {f.subject for f in test}
    assert split_facts(list(reversed(facts))) == (val, test)  # order-independent
    assert subject_positions(tiny_gpt2, france.prompt, "France") == [4]  # BOS, The, capital, of, France
    with pytest.raises(BadRequest):
        split_facts(facts, 1.0)


def test_known_facts_and_batched_logits(tiny_gpt2):
    rel = load_relation("country_capital_city")
    facts = relation_facts(tiny_gpt2, rel)[:7]
    prompts = [f.prompt for f in facts]
    logits = last_logits(tiny_gpt2, prompts, batch_size=2)  # several lengths, small batches
    for i in (0, 3, 6):
        single = tiny_gpt2.bridge(tiny_gpt2.tokenize(prompts[i]))[0, -1]
        assert (logits[i] - single).abs().max() < 1e-4
    ranks = target_ranks(logits, [f.target_id for f in facts]).tolist()
    cut = sorted(ranks)[3]
    known = known_facts(tiny_gpt2, rel, k=cut, facts=facts)
    assert [f.subject for f in known] == [f.subject for f, r in zip(facts, ranks, strict=True) if r <= cut]
    assert 4 <= len(known) < len(facts) or len(set(ranks)) < len(ranks)


def test_same_length_subjects(tiny_gpt2):
    rel = load_relation("country_capital_city")
    n = tiny_gpt2.tokenize(rel.template.format("France")).shape[1]
    others = same_length_subjects(tiny_gpt2, rel, "France")
    assert others and "France" not in others
    objects = dict(rel.samples)
    for subject in others:
        assert tiny_gpt2.tokenize(rel.template.format(subject)).shape[1] == n
        assert tiny_gpt2.first_token_id(" " + objects[subject]) != tiny_gpt2.first_token_id(" Paris")


def test_run_relation_row(tiny_gpt2):
    """Hit@k of the original model checked against an independent forward; the full circuit must
    reproduce the original model's hits exactly."""
    V = tiny_gpt2.arch.d_vocab
    k = V // 2  # random weights: about half the answers rank in the top half
    calls = []
    row = run_relation(tiny_gpt2, "country_capital_city", n=3, k=k, known_k=V, top_n=110, ablation="zero",
                       progress=lambda d, t, m: calls.append((d, t)))
    assert row["n_validation"] == 3 and row["n_test"] == 3 and row["total_edges"] == 110
    assert row["edges"] == 110 and row["random_edges"] == [110, 110, 110]
    rel = load_relation("country_capital_city")
    val, test = split_facts(relation_facts(tiny_gpt2, rel))
    for split, facts in (("validation", val[:3]), ("test", test[:3])):
        ranks = target_ranks(last_logits(tiny_gpt2, [f.prompt for f in facts]), [f.target_id for f in facts])
        expected = float((ranks <= k).float().mean())
        assert row[split]["original"] == pytest.approx(expected)
        assert row[split]["circuit"] == pytest.approx(expected)
    assert calls[-1] == (9, 9)
    small = run_relation(tiny_gpt2, "country_capital_city", n=2, k=10, known_k=V, method="eap-ig",
                         ablation="patch", top_n=20)
    assert 0 < small["edges"] <= 20 and small["validation"]["n"] + small["dropped_no_swap"] >= 2
    refined = run_relation(tiny_gpt2, "country_capital_city", n=2, k=10, known_k=V, ablation="patch", top_n=20)
    assert refined["method"] == "eap-ig-refine" and 0 < refined["edges"] <= 20
    assert refined["params"]["calibration"]["facts"] >= 1
    text = format_table([row, small])
    assert "country_capital_city" in text and "average" in text
    with pytest.raises(BadRequest):
        run_relation(tiny_gpt2, "country_capital_city", n=3, k=1)  # a random model knows nothing


def test_cli_relation_list_and_unknown():
    import json

    from typer.testing import CliRunner

    from kcircuits.cli import app

    runner = CliRunner()
    listed = runner.invoke(app, ["relation", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert len(json.loads(listed.output)) == 47
    bad = runner.invoke(app, ["relation", "no_such_relation", "--model", "tiny-gpt2"])
    assert bad.exit_code == 2 and "unknown relation" in bad.output
