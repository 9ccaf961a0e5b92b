"""Second moment C = E[k k^T] of one layer's MLP keys (``blocks.{l}.mlp.hook_post``) for ROME.

Offline there is no Wikipedia sample, so C is estimated from text the model generates itself
(sampled with a fixed seed), or from a local text file the operator names in the settings
(``KCIRCUITS_EDIT_COVARIANCE_TEXT``), or not at all (``none``: ROME then uses u = k*/|k*|).
Estimates are cached on disk under ``settings.cache_dir/rome`` per model, revision and layer.
Shrinkage towards a scaled identity is applied when C is used (few thousand tokens < d_mlp^2).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from kcircuits.config import Settings, get_settings
from kcircuits.errors import BadRequest
from kcircuits.lm.loader import LoadedModel

log = logging.getLogger(__name__)

SOURCES = ("generated", "file", "none")
_STARTERS = ["The", "A", "In", "It", "This", "When", "We", "I", "He", "She", "They", "One", "My",
             "There", "After", "On"]
_PREFIX_CACHE: dict[tuple, list[str]] = {}


@dataclass
class Covariance:
    """``moment``: [d_mlp, d_mlp] uncentred second moment (None for source ``none``)."""

    source: str
    n_tokens: int
    moment: torch.Tensor | None
    detail: str = ""

    def describe(self, shrinkage: float) -> str:
        if self.moment is None:
            return "none (u = k*/|k*|)"
        return f"{self.source}: {self.n_tokens} tokens{self.detail}, shrinkage {shrinkage:g}"

    def solve(self, key: torch.Tensor, shrinkage: float) -> torch.Tensor:
        """C_s^-1 k with C_s = (1 - s) C + s * mean(diag C) * I.  key: [d_mlp] -> [d_mlp]."""
        if self.moment is None:
            return key.clone()
        c = self.moment.to(device=key.device, dtype=torch.float64)
        scale = torch.diagonal(c).mean()
        c = (1.0 - shrinkage) * c + shrinkage * scale * torch.eye(c.shape[0], dtype=c.dtype, device=c.device)
        return torch.linalg.solve(c, key.to(torch.float64)).to(key.dtype)


def _start_ids(model: LoadedModel) -> list[list[int]]:
    """Starter prompts (BOS per spec + one word) of equal token length."""
    rows = [model.tokenize(word)[0].tolist() for word in _STARTERS]
    length = min(len(r) for r in rows)
    return [r for r in rows if len(r) == length]


def generate_ids(model: LoadedModel, n: int, length: int, seed: int = 0, top_k: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``n`` continuations of ``length`` new tokens with the model itself (fixed seed).

    Returns ids [n, start+length] and a mask [n, start+length] that is False after an EOS.
    The global RNG is left as it was.
    """
    starts = _start_ids(model)
    rows = [starts[i % len(starts)] for i in range(n)]
    ids = torch.tensor(rows, dtype=torch.long, device=model.device)
    hf = model.hf_model
    eos = model.tokenizer.eos_token_id
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=top_k,
                          max_new_tokens=length, min_new_tokens=length,
                          pad_token_id=eos if eos is not None else 0)
    mask = torch.ones_like(out, dtype=torch.bool)
    if eos is not None:
        is_eos = out == eos
        is_eos[:, : ids.shape[1]] = False  # GPT-2's BOS is its EOS
        mask = torch.cumsum(is_eos.long(), dim=1) == 0
    return out, mask


def generated_prefixes(model: LoadedModel, n: int, length: int, seed: int = 0) -> list[str]:
    """``n`` short model-generated texts (ROME's context templates), cached per model in memory."""
    key = (model.spec.id, model.revision.split("+edit:")[0], n, length, seed)
    if key not in _PREFIX_CACHE:
        ids, mask = generate_ids(model, n, length, seed=seed)
        skip = 1 if model.spec.prepend_bos and model.tokenizer.bos_token_id is not None else 0
        texts = []
        for row, keep in zip(ids.tolist(), mask.tolist(), strict=True):
            toks = [t for t, k in zip(row[skip:], keep[skip:], strict=True) if k]
            text = model.tokenizer.decode(toks).replace("{", " ").replace("}", " ").replace("\n", " ").strip()
            texts.append(text)
        _PREFIX_CACHE[key] = texts
    return list(_PREFIX_CACHE[key])


def _text_file_ids(model: LoadedModel, path: Path, max_tokens: int, chunk: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    text = path.read_text(encoding="utf-8", errors="replace")
    flat = model.tokenizer(text[: max_tokens * 12], add_special_tokens=False)["input_ids"][:max_tokens]
    n = max(1, len(flat) // chunk)
    if len(flat) < chunk:
        raise BadRequest(f"covariance text file {path.name} has fewer than {chunk} tokens")
    ids = torch.tensor(flat[: n * chunk], dtype=torch.long, device=model.device).view(n, chunk)
    return ids, torch.ones_like(ids, dtype=torch.bool)


def _accumulate(model: LoadedModel, layer: int, ids: torch.Tensor, mask: torch.Tensor, batch: int = 8) -> torch.Tensor:
    """Sum of k k^T over unmasked positions. ids, mask: [n, T] -> [d_mlp, d_mlp] float64."""
    name = f"blocks.{layer}.mlp.hook_post"
    total = None
    with torch.no_grad():
        for start in range(0, ids.shape[0], batch):
            _, cache = model.run_with_cache(ids[start:start + batch], [name])
            keys = cache[name][mask[start:start + batch]].to(torch.float64)  # [tokens, d_mlp]
            part = keys.T @ keys
            total = part if total is None else total + part
    return total


def _cache_path(settings: Settings, model: LoadedModel, layer: int, tag: str) -> Path:
    rev = hashlib.sha256(model.revision.split("+edit:")[0].encode()).hexdigest()[:16]
    return settings.cache_dir / "rome" / f"{model.spec.id}-{rev}-l{layer}-{tag}.pt"


def layer_covariance(model: LoadedModel, layer: int, source: str = "generated", *, n_tokens: int = 2048,
                     seq_len: int = 32, seed: int = 0, settings: Settings | None = None) -> Covariance:
    """C for ``layer`` from ``source`` (see module doc); computed once, then read from the disk cache."""
    settings = settings or get_settings()
    if source not in SOURCES:
        raise BadRequest(f"unknown covariance source {source!r}; choose one of {list(SOURCES)}")
    if source == "none":
        return Covariance("none", 0, None)
    detail = ""
    if source == "file":
        path = settings.edit_covariance_text
        if not path:
            raise BadRequest("covariance source 'file' needs the operator setting KCIRCUITS_EDIT_COVARIANCE_TEXT")
        path = Path(path)
        if not path.is_file():
            raise BadRequest("the operator's covariance text file does not exist")
        st = path.stat()
        tag = f"file-{hashlib.sha256(f'{path.name}:{st.st_size}:{int(st.st_mtime)}'.encode()).hexdigest()[:12]}-{n_tokens}"
        detail = f" from {path.name}"
    else:
        tag = f"gen-{n_tokens}-{seq_len}-s{seed}"
    cache = _cache_path(settings, model, layer, tag)
    if cache.exists():
        data = torch.load(cache, map_location="cpu", weights_only=True)
        return Covariance(source, int(data["n"]), data["moment"], detail)
    if source == "file":
        ids, mask = _text_file_ids(model, path, n_tokens)
    else:
        ids, mask = generate_ids(model, max(1, n_tokens // seq_len), seq_len, seed=seed)
    log.info("estimating MLP key covariance of %s layer %d from %s text (%d tokens)",
             model.spec.id, layer, source, int(mask.sum()))
    total = _accumulate(model, layer, ids, mask)
    n = int(mask.sum())
    moment = (total / n).to(torch.float32).cpu()
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    torch.save({"n": n, "moment": moment}, tmp)
    tmp.replace(cache)
    return Covariance(source, n, moment, detail)
