"""Hand-built models with known circuits, for tests of circuit discovery (EAP, EAP-IG, ACDC).

:func:`planted_copy_model` plants one "mover" head in a tiny random GPT-2: at every position it
attends to the subject token (the only token whose embedding carries a large component on
residual dimension ``SUBJ_DIM``) and its OV circuit writes that component onto dimension
``ANS_DIM``, which the (tied) unembedding reads as the answer token. Everything else is small
random weights, so the answer's logit comes through the edges

    input -> a{L-1}.h{h}<k>,  input -> a{L-1}.h{h}<v>,  a{L-1}.h{h} -> logits

and swapping the subject for a token without the planted component removes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from kcircuits.lm.loader import LoadedModel

SUBJ_DIM = 0
ANS_DIM = 1


@dataclass
class PlantedCircuit:
    """A planted model with its prompt pair and the edges that carry the answer."""

    model: LoadedModel
    prompt: str
    corrupt_prompt: str
    target: str
    subject: str
    layer: int
    head: int

    @property
    def head_id(self) -> str:
        return f"a{self.layer}.h{self.head}"

    @property
    def edge_ids(self) -> list[str]:
        """Edge ids (``sender->receiver``) of the planted circuit."""
        h = self.head_id
        return [f"input->{h}<k>", f"input->{h}<v>", f"{h}->logits"]


def _isolate(hf: Any, planted: list[int]) -> None:
    """No position embedding, attention or MLP of a GPT-2 ``hf`` reads or writes the residual
    dimensions ``planted`` (the planted components are written after this)."""
    hf.transformer.wpe.weight[:, planted] = 0.0
    for block in hf.transformer.h:
        block.attn.c_attn.weight[planted, :] = 0.0
        block.attn.c_proj.weight[:, planted] = 0.0
        block.attn.c_proj.bias[planted] = 0.0
        block.mlp.c_fc.weight[planted, :] = 0.0
        block.mlp.c_proj.weight[:, planted] = 0.0
        block.mlp.c_proj.bias[planted] = 0.0


def planted_copy_model(n_layers: int = 2, n_heads: int = 4, d_model: int = 64, head: int = 2,
                       subject: str = " France", corrupt_subject: str = " Spain", target: str = " Paris",
                       key_gain: float = 2.0, seed: int = 0, device: str = "cpu") -> PlantedCircuit:
    """A tiny GPT-2 whose last layer's head ``head`` copies the subject token to the answer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from kcircuits.lm.loader import from_hf_model
    from kcircuits.lm.random_models import gpt2_tokenizer

    tokenizer = gpt2_tokenizer()
    subj_id = tokenizer(subject)["input_ids"]
    ans_id = tokenizer(target)["input_ids"]
    if len(subj_id) != 1 or len(ans_id) != 1 or len(tokenizer(corrupt_subject)["input_ids"]) != 1:
        raise ValueError("subject, corrupt subject and target must be single tokens")
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=n_layers, n_head=n_heads, n_embd=d_model, vocab_size=tokenizer.vocab_size,
                        n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf = GPT2LMHeadModel(config).eval()
    dh = d_model // n_heads
    layer = n_layers - 1
    with torch.no_grad():
        planted = [SUBJ_DIM, ANS_DIM]
        wte = hf.transformer.wte.weight  # tied with lm_head
        wte[:, planted] = 0.0
        wte[subj_id[0], SUBJ_DIM] = 1.0  # the subject carries the key/value feature
        wte[ans_id[0], ANS_DIM] = 1.0  # the answer reads the written feature
        _isolate(hf, planted)
        # constant query, key and value = the subject feature, output -> answer direction
        _plant_head(hf.transformer.h[layer].attn, head, dh, d_model, SUBJ_DIM, SUBJ_DIM, {ANS_DIM: 1.0}, key_gain)
    model = from_hf_model(f"planted-copy-{n_layers}x{n_heads}", hf, tokenizer, device=device,
                          revision=f"planted:{seed}")
    prompt = f"The capital of{subject} is the city of"
    corrupt = f"The capital of{corrupt_subject} is the city of"
    return PlantedCircuit(model, prompt, corrupt, target, subject.strip(), layer, head)


REL_DIM = 2
FUNC_DIM = 3
JUNK_DIM = 4
ROLES_PROMPT = "The capital of France is the city of"


@dataclass
class PlantedRoles:
    """A model with planted heads of known role on :data:`ROLES_PROMPT` (see
    :func:`planted_roles_model`); ``decoys`` are planted heads that must stay unlabelled."""

    model: LoadedModel
    prompt: str
    subject: str
    target: str
    mover: str
    relation: str
    decoys: dict[str, str]  # head id -> why it must not get a role


def _clear_head(attn: Any, head: int, dh: int, d_model: int) -> tuple[Any, int, int, Any]:
    """Zero head ``head`` of a GPT-2 attention block (its Q/K/V columns, biases and output rows) and
    give it a constant query; returns (c_attn weight [d, 3d], key column, value column, c_proj weight)."""
    w, bias = attn.c_attn.weight, attn.c_attn.bias  # Conv1D [d, 3d] = q | k | v
    q0, k0, v0 = head * dh, d_model + head * dh, 2 * d_model + head * dh
    for c0 in (q0, k0, v0):
        w[:, c0:c0 + dh] = 0.0
        bias[c0:c0 + dh] = 0.0
    bias[q0] = 1.0
    proj = attn.c_proj.weight  # [d (heads concatenated), d]
    proj[head * dh:(head + 1) * dh, :] = 0.0
    return w, k0, v0, proj


def _plant_head(attn: Any, head: int, dh: int, d_model: int, key_dim: int, value_dim: int,
                writes: dict[int, float], key_gain: float) -> None:
    """Head ``head`` of a GPT-2 attention block: constant query, key = ``key_gain`` * residual
    dimension ``key_dim``, value = dimension ``value_dim``, output {residual dim: gain}."""
    w, k0, v0, proj = _clear_head(attn, head, dh, d_model)
    w[key_dim, k0] = key_gain
    w[value_dim, v0] = 1.0
    for dim, gain in writes.items():
        proj[head * dh, dim] = gain


def planted_roles_model(n_heads: int = 8, d_model: int = 64, key_gain: float = 8.0, seed: int = 0,
                        device: str = "cpu") -> PlantedRoles:
    """A 2-layer GPT-2 on "The capital of France is the city of" -> " Paris" with, beside small
    random heads (which touch none of the planted residual dimensions):

    - mover a1.h2: attends to " France" (feature SUBJ_DIM) and writes the answer direction ANS_DIM;
    - relation a0.h1: attends to " capital" and " city" (REL_DIM) and writes ANS_DIM;
    - decoy a0.h3: attends to function words and the last position (FUNC_DIM), writes ANS_DIM:
      significant, but its attention is on no content token;
    - decoy a1.h0: attends to " France", writes against the answer and onto " banana" (JUNK_DIM):
      significant and subject-attending, but writes neither the answer nor the subject;
    - decoy a1.h5: attends to " France" with a tiny output: not significant.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    from kcircuits.lm.loader import from_hf_model
    from kcircuits.lm.random_models import gpt2_tokenizer

    tokenizer = gpt2_tokenizer()

    def one(text: str) -> int:
        ids = tokenizer(text)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"{text!r} is not one token")
        return ids[0]

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_head=n_heads, n_embd=d_model, vocab_size=tokenizer.vocab_size,
                        n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf = GPT2LMHeadModel(config).eval()
    dh = d_model // n_heads
    planted = [SUBJ_DIM, ANS_DIM, REL_DIM, FUNC_DIM, JUNK_DIM]
    features = {" France": SUBJ_DIM, " Paris": ANS_DIM, " capital": REL_DIM, " city": REL_DIM,
                "The": FUNC_DIM, " of": FUNC_DIM, " is": FUNC_DIM, " the": FUNC_DIM, " banana": JUNK_DIM}
    with torch.no_grad():
        wte = hf.transformer.wte.weight  # tied with lm_head
        wte[:, planted] = 0.0
        for text, dim in features.items():
            wte[one(text), dim] = 1.0
        _isolate(hf, planted)
        l0, l1 = hf.transformer.h[0].attn, hf.transformer.h[1].attn
        _plant_head(l1, 2, dh, d_model, SUBJ_DIM, SUBJ_DIM, {ANS_DIM: 1.0}, key_gain)
        _plant_head(l0, 1, dh, d_model, REL_DIM, REL_DIM, {ANS_DIM: 0.1}, key_gain)
        _plant_head(l0, 3, dh, d_model, FUNC_DIM, FUNC_DIM, {ANS_DIM: 0.1}, key_gain)
        _plant_head(l1, 0, dh, d_model, SUBJ_DIM, SUBJ_DIM, {ANS_DIM: -0.5, JUNK_DIM: 1.0}, key_gain)
        _plant_head(l1, 5, dh, d_model, SUBJ_DIM, SUBJ_DIM, {ANS_DIM: 1e-4}, key_gain)
    model = from_hf_model(f"planted-roles-2x{n_heads}", hf, tokenizer, device=device, revision=f"planted-roles:{seed}")
    return PlantedRoles(model, ROLES_PROMPT, "France", " Paris", mover="a1.h2", relation="a0.h1",
                        decoys={"a0.h3": "attends to function words", "a1.h0": "writes neither answer nor subject",
                                "a1.h5": "not significant"})


@dataclass
class PlantedNeuron:
    """A planted model whose fact is carried by one MLP unit (``layer``, ``index``) at the last position."""

    model: LoadedModel
    prompts: list[str]  # paraphrases that mention the subject
    corrupt_prompt: str
    target: str
    layer: int
    index: int


def planted_neuron_model(subject: str = " France", corrupt_subject: str = " Spain", target: str = " Paris",
                         index: int = 37, d_model: int = 64, seed: int = 0, device: str = "cpu") -> PlantedNeuron:
    """A tiny 2-layer GPT-2 where layer 0's head 1 moves the subject feature to every later position
    (dimension ``MOVE_DIM``) and layer 1's MLP unit ``index`` reads it and writes the answer direction
    (``ANS_DIM``, read by the tied unembedding of ``target``). No other component reads or writes the
    planted dimensions, so the answer's probability comes through that one neuron."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from kcircuits.lm.loader import from_hf_model
    from kcircuits.lm.random_models import gpt2_tokenizer

    move_dim, head, n_heads = 2, 1, 4
    tokenizer = gpt2_tokenizer()
    subj_id, ans_id = tokenizer(subject)["input_ids"], tokenizer(target)["input_ids"]
    if len(subj_id) != 1 or len(ans_id) != 1:
        raise ValueError("subject and target must be single tokens")
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_head=n_heads, n_embd=d_model, vocab_size=tokenizer.vocab_size,
                        n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf = GPT2LMHeadModel(config).eval()
    dh = d_model // n_heads
    planted = [SUBJ_DIM, ANS_DIM, move_dim]
    with torch.no_grad():
        wte = hf.transformer.wte.weight
        wte[:, planted] = 0.0
        wte[subj_id[0], SUBJ_DIM] = 1.0
        wte[ans_id[0], ANS_DIM] = 1.0
        _isolate(hf, planted)
        # head 1 attends to the subject and copies its feature onto MOVE_DIM
        _plant_head(hf.transformer.h[0].attn, head, dh, d_model, SUBJ_DIM, SUBJ_DIM, {move_dim: 1.0}, 2.0)
        mlp = hf.transformer.h[1].mlp
        mlp.c_fc.weight[:, index] = 0.0
        mlp.c_fc.bias[index] = 0.0
        mlp.c_fc.weight[move_dim, index] = 1.0  # the unit reads the moved subject feature
        mlp.c_proj.weight[index, :] = 0.0
        mlp.c_proj.weight[index, ANS_DIM] = 4.0  # and writes the answer direction
        hf.transformer.ln_f.weight[ANS_DIM] = 2.0
    model = from_hf_model("planted-neuron", hf, tokenizer, device=device, revision=f"planted-neuron:{seed}")
    prompts = [f"The capital of{subject} is the city of", f"The capital city of{subject} is",
               f"What is the capital of{subject}? It is"]
    return PlantedNeuron(model, prompts, f"The capital of{corrupt_subject} is the city of", target, 1, index)


@dataclass
class PlantedRelation:
    """A planted model that knows ``known`` (subject, object) facts of one LRE relation through a
    single head (``layer``, ``head``): the truth for a relation run."""

    model: LoadedModel
    relation: str
    known: list[tuple[str, str]]
    layer: int
    head: int

    @property
    def edge_ids(self) -> list[str]:
        h = f"a{self.layer}.h{self.head}"
        return [f"input->{h}<k>", f"input->{h}<v>", f"{h}->logits"]


def planted_relation_model(relation: str = "country_capital_city", n_facts: int = 12, n_heads: int = 4,
                           d_model: int = 64, head: int = 2, gain: float = 12.0, seed: int = 0,
                           device: str = "cpu") -> PlantedRelation:
    """A tiny 2-layer GPT-2 that answers the first ``n_facts`` samples of ``relation`` whose subject
    is one token (with distinct answer tokens): subject i's embedding carries feature dimension
    ``8 + i``; the last layer's head ``head`` attends to any subject (constant query, key = the sum
    of the subject features) and its value/output maps feature i onto answer dimension
    ``8 + n + i``, which the tied unembedding reads as answer i's first token. Nothing else reads
    or writes the planted dimensions, so every known fact flows through that head alone."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from kcircuits.circuits.relation import load_relation
    from kcircuits.lm.loader import from_hf_model
    from kcircuits.lm.random_models import gpt2_tokenizer

    tokenizer = gpt2_tokenizer()
    dh = d_model // n_heads
    facts, answers = [], set()
    for subject, obj in load_relation(relation).samples:
        subj, ans = tokenizer(" " + subject)["input_ids"], tokenizer(" " + obj)["input_ids"][0]
        if len(subj) == 1 and ans not in answers:
            facts.append((subject, obj, subj[0], ans))
            answers.add(ans)
        if len(facts) == n_facts:
            break
    n = len(facts)
    if 8 + 2 * n > d_model or n > dh:
        raise ValueError("too many facts for d_model / the head size")
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_head=n_heads, n_embd=d_model, vocab_size=tokenizer.vocab_size,
                        n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf = GPT2LMHeadModel(config).eval()
    layer = 1
    planted = list(range(8, 8 + 2 * n))
    with torch.no_grad():
        wte = hf.transformer.wte.weight  # tied with lm_head
        wte[:, planted] = 0.0
        _isolate(hf, planted)
        w, k0, v0, proj = _clear_head(hf.transformer.h[layer].attn, head, dh, d_model)
        for i, (_, _, subj_id, ans_id) in enumerate(facts):
            wte[subj_id, 8 + i] = 1.0
            wte[ans_id, 8 + n + i] = 1.0
            w[8 + i, k0] = 4.0  # any subject feature raises the key
            w[8 + i, v0 + i] = 1.0  # value i = feature i
            proj[head * dh + i, 8 + n + i] = gain  # -> answer i
    model = from_hf_model(f"planted-relation-{n}", hf, tokenizer, device=device, revision=f"planted-relation:{seed}")
    return PlantedRelation(model, relation, [(s, o) for s, o, _, _ in facts], layer, head)
