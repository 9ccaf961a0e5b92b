"""Randomly initialised models built from a config, with the real GPT-2 tokenizer (no downloads).

Used by the tests, the benchmarks (GPT-2-shaped models: timings and graph sizes do not depend on
weight values) and, when ``KCIRCUITS_TEST_MODELS=1``, as registry entries of the server.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from kcircuits.lm.loader import LoadedModel, from_hf_model

GPT2_TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "data" / "gpt2-tokenizer"


@lru_cache(maxsize=1)
def gpt2_tokenizer() -> Any:
    """The real GPT-2 BPE tokenizer from the packaged vocab/merges files (MIT)."""
    from transformers import GPT2TokenizerFast

    return GPT2TokenizerFast.from_pretrained(str(GPT2_TOKENIZER_DIR))


def random_model(family: str = "gpt2", *, n_layers: int = 2, n_heads: int = 4, n_kv_heads: int | None = None,
                 d_model: int = 64, d_mlp: int | None = None, n_ctx: int = 256, seed: int = 0,
                 model_id: str | None = None, device: str = "cpu", perturb_norms: bool = True) -> LoadedModel:
    """A random GPT-2 or Llama model (pre-LN, fp32) with the GPT-2 tokenizer's vocabulary.

    ``perturb_norms`` gives every norm a non-trivial weight (and bias): fresh initialisations
    make norms the identity, which hides bugs in code that treats norms specially.
    """
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tokenizer = gpt2_tokenizer()
    torch.manual_seed(seed)
    if family == "gpt2":
        config = GPT2Config(n_layer=n_layers, n_head=n_heads, n_embd=d_model, n_inner=d_mlp,
                            vocab_size=tokenizer.vocab_size, n_positions=n_ctx,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        hf = GPT2LMHeadModel(config)
    elif family == "llama":
        config = LlamaConfig(num_hidden_layers=n_layers, num_attention_heads=n_heads,
                             num_key_value_heads=n_kv_heads or n_heads, hidden_size=d_model,
                             intermediate_size=d_mlp or 4 * d_model, vocab_size=tokenizer.vocab_size,
                             max_position_embeddings=n_ctx, bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id)
        hf = LlamaForCausalLM(config)
    else:
        raise ValueError(f"unknown family {family!r}")
    if perturb_norms:
        _perturb_norms(hf, seed)
    name = model_id or f"random-{family}-{n_layers}x{n_heads}-s{seed}"
    return from_hf_model(name, hf.eval(), tokenizer, device=device, prepend_bos=True, revision=f"random:{name}")


def _perturb_norms(hf: Any, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in hf.named_parameters():
            if "ln" in name or "norm" in name:
                noise = torch.randn(param.shape, generator=generator) * 0.2
                param.add_(noise if name.endswith("bias") else noise.abs() - 0.1)


#: Small random models the server registers when test models are enabled.
TEST_MODELS: dict[str, dict[str, Any]] = {
    "tiny-gpt2": dict(family="gpt2", n_layers=2, n_heads=4, d_model=64),
    "tiny-llama": dict(family="llama", n_layers=2, n_heads=4, n_kv_heads=2, d_model=64),
    "gpt2-small-random": dict(family="gpt2", n_layers=12, n_heads=12, d_model=768),
}
