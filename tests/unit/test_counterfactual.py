"""The counterfactual picker: same relation and template, a different valid answer as the foil.

The model's answers are planted: ``_last_logits`` is replaced by a table lookup, so each test knows
what the "model" answers on every candidate prompt.
"""

from __future__ import annotations

import pytest
import torch

import kcircuits.circuits.counterfactual as cf
from kcircuits.circuits.relation import load_relation

TEMPLATE = "The capital of {} is the city of"


def _planted_answers(model, answers: dict[str, str], default: str = " the"):
    """A stand-in for the model's last-position logits: the prompt's answer gets logit 10."""

    def last_logits(_model, tokens: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(tokens.shape[0], model.arch.d_vocab)
        for i, row in enumerate(tokens.tolist()):
            text = model.tokenizer.decode(row)
            answer = next((a for key, a in answers.items() if key in text), default)
            out[i, model.first_token_id(answer)] = 10.0
        return out

    return last_logits


def _capitals():
    return dict(load_relation("country_capital_city").samples)


def test_keeps_the_relation_and_template_and_prefers_known_counterfactuals(tiny_gpt2, monkeypatch):
    capitals = _capitals()
    answers = {f"of {c} is": " " + city for c, city in capitals.items()}
    monkeypatch.setattr(cf, "_last_logits", _planted_answers(tiny_gpt2, answers))
    prompt = TEMPLATE.format("France")
    choice = cf.find_counterfactuals(tiny_gpt2, prompt, "France", tiny_gpt2.first_token_id(" Paris"), k=2)
    assert choice is not None and choice.source == "template" and choice.relation == "country_capital_city"
    assert len(choice.chosen) == 2
    for cand in choice.candidates:
        assert cand.relation == "country_capital_city"
        assert cand.prompt == TEMPLATE.format(cand.subject)
        assert cand.kind == "known" and cand.foil == tiny_gpt2.token_strings([tiny_gpt2.first_token_id(" " + capitals[cand.subject])])[0]
        assert cand.foil_id != tiny_gpt2.first_token_id(" Paris")
        # patching is position by position: same token count and subject positions
        assert tiny_gpt2.tokenize(cand.prompt).shape == tiny_gpt2.tokenize(prompt).shape
    assert "country_capital_city" in choice.reason


def test_refuses_a_foil_equal_to_the_target(tiny_gpt2, monkeypatch):
    """Candidates on which the model still answers the target are never chosen; when every
    candidate of every source does, there is no counterfactual at all."""
    capitals = _capitals()
    answers = {f"of {c} is": " " + city for c, city in capitals.items()}
    stubborn = [c for c in capitals if c != "France"][:6]
    answers.update({f"of {c} is": " Paris" for c in stubborn})  # these still answer the target
    monkeypatch.setattr(cf, "_last_logits", _planted_answers(tiny_gpt2, answers))
    target = tiny_gpt2.first_token_id(" Paris")
    choice = cf.find_counterfactuals(tiny_gpt2, TEMPLATE.format("France"), "France", target, k=3)
    assert choice is not None
    assert all(c.subject not in stubborn and c.foil_id != target for c in choice.candidates)
    monkeypatch.setattr(cf, "_last_logits", _planted_answers(tiny_gpt2, {}, default=" Paris"))
    assert cf.find_counterfactuals(tiny_gpt2, TEMPLATE.format("France"), "France", target) is None


def test_an_answer_of_another_kind_is_not_a_foil(tiny_gpt2, monkeypatch):
    """On the template source only objects of the relation count: a candidate on which the model
    answers a function word is skipped."""
    capitals = _capitals()
    others = [c for c in capitals if c != "France"]
    answers = {f"of {c} is": " the" for c in others[:4]}
    answers.update({f"of {c} is": " " + capitals[c] for c in others[4:]})
    monkeypatch.setattr(cf, "_last_logits", _planted_answers(tiny_gpt2, answers))
    choice = cf.find_counterfactuals(tiny_gpt2, TEMPLATE.format("France"), "France", tiny_gpt2.first_token_id(" Paris"))
    assert choice is not None and choice.chosen[0].subject not in others[:4]
    assert choice.chosen[0].foil.strip() != "the"


def test_template_matching_finds_the_subject():
    assert cf.match_template("The capital of Peru is the city of") == ("country_capital_city", TEMPLATE, "Peru")
    assert cf.match_template("  The capital of Peru is the city of ", "Peru")[0] == "country_capital_city"
    assert cf.match_template("Nothing like a template here") is None


@pytest.mark.slow
def test_smollm2_counterfactual_for_a_template_prompt(smollm2):
    """On the real model: the picked counterfactual keeps the relation, the model answers the
    foil on it, and the foil is a capital, not the target."""
    target = smollm2.first_token_id(" Lima")
    choice = cf.find_counterfactuals(smollm2, TEMPLATE.format("Peru"), "Peru", target)
    assert choice is not None and choice.relation == "country_capital_city"
    best = choice.chosen[0]
    assert best.foil_id != target and best.kind == "known"
    with torch.no_grad():
        top = int(smollm2.bridge(smollm2.tokenize(best.prompt))[0, -1].argmax())
    assert top == best.foil_id
