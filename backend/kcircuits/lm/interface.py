"""What the science calls on a loaded model: forwards with hooks or caches, the weights and modules
it reads, and the families' quirks (GPT-2: LayerNorm, Conv1D weights [in, out]; Llama: RMSNorm,
Linear weights [out, in], rotary position embeddings passed to each block). Only this module and
the loader touch the TransformerBridge.

Hook names are TransformerLens' legacy names (``blocks.{l}.hook_resid_pre``, ``ln_final.hook_scale``,
...). A hook is ``(name, fn)`` with ``fn(activation, hook) -> activation | None``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import warnings
from collections.abc import Collection, Iterator, Sequence
from typing import Any

import torch

Hook = tuple[str, Any]

#: extra cached activations a block needs when called directly (:meth:`LMInterface.run_blocks`)
_BLOCK_INPUTS = {"gpt2": (), "llama": ("rotary_emb.hook_cos", "rotary_emb.hook_sin")}


class LMInterface:
    """Mixed into :class:`kcircuits.lm.loader.LoadedModel` (which provides ``bridge``, ``arch``)."""

    bridge: Any
    arch: Any

    # forwards -----------------------------------------------------------------------------------
    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [b, pos] -> logits [b, pos, V] (no hooks)."""
        return self.bridge(tokens)

    def run_with_hooks(self, tokens: torch.Tensor, hooks: Sequence[Hook], last_only: bool = False) -> torch.Tensor:
        """Logits [b, pos, V] of a forward with ``hooks``, or [b, 1, V] with ``last_only`` (the
        unembedding of the other positions is skipped)."""
        if last_only:
            return self.bridge.run_with_hooks(tokens, fwd_hooks=list(hooks), logits_to_keep=1)
        return self.bridge.run_with_hooks(tokens, fwd_hooks=list(hooks))

    def run_with_cache(self, tokens: torch.Tensor, names: Collection[str]) -> tuple[torch.Tensor, Any]:
        """(logits [b, pos, V], cache): ``cache[name]`` is the activation of each hook in ``names``
        (e.g. ``blocks.{l}.hook_resid_pre`` [b, pos, d_model], ``ln_final.hook_scale`` [b, pos, 1])."""
        wanted = set(names)
        return self.bridge.run_with_cache(tokens, names_filter=lambda name: name in wanted)

    @contextlib.contextmanager
    def hooks(self, hooks: Sequence[Hook]) -> Iterator[None]:
        """``hooks`` stay attached inside the block (for :meth:`run_blocks`), removed after."""
        with self.bridge.hooks(fwd_hooks=list(hooks)):
            yield

    @contextlib.contextmanager
    def norm_scales(self, provider: Any) -> Iterator[None]:
        """Inside the block every pre-norm call divides by ``provider(scale)`` instead of its own
        ``scale`` [..., 1] = sqrt(var + eps) (the variance about the mean for LayerNorm, the mean
        square for RMSNorm): each block's ln1 (on the residual, then once per q/k/v fork, which is
        [b * pos * n_heads, d_model]), ln2 and ln_final, in forward order. Weights and biases apply
        as usual; ``provider`` may return ``scale`` itself."""

        def on_scale(scale: torch.Tensor, hook: Any) -> torch.Tensor:
            out = provider(scale)
            return out.clone() if out is scale else out  # a new tensor: the bridge applies edited scales

        # the q/k/v forks call ln1's HF module itself (the bridge's ln1, whose scale is always edited
        # here, no longer does): its forward is replaced on the instance for the block
        forks = [block.ln1.original_component for block in self.bridge.blocks]
        for raw in forks:
            raw.forward = _ScaledNorm(raw, provider, self.norm_kind)
        names = [f"blocks.{layer}.{ln}.hook_scale" for layer in range(self.arch.n_layers) for ln in ("ln1", "ln2")]
        try:
            with warnings.catch_warnings(), self.bridge.hooks(fwd_hooks=[(n, on_scale) for n in names + ["ln_final.hook_scale"]]):
                # the bridge warns on every edited scale that it rebuilds the norm's output itself
                warnings.filterwarnings("ignore", message="A forward hook edited hook_scale")
                yield
        finally:
            for raw in forks:
                del raw.forward

    @property
    def block_input_names(self) -> tuple[str, ...]:
        """Hook names whose cached activations :meth:`run_blocks` needs (Llama: the rotary cos/sin)."""
        return _BLOCK_INPUTS[self.arch.family]

    def run_blocks(self, resid: torch.Tensor, start: int, cache: Any, stop: int | None = None) -> torch.Tensor:
        """Blocks ``start``..``stop - 1`` (default: to the last) called directly on the residual
        ``resid`` [B, pos, d_model] -> the last one's resid_post [B, pos, d_model]. ``cache`` holds
        :attr:`block_input_names` from a clean forward (batch 1 or B). Hooks attached with
        :meth:`hooks` fire."""
        kwargs: dict[str, Any] = {}
        if self.arch.family == "llama":
            batch = resid.shape[0]
            cos, sin = cache["rotary_emb.hook_cos"], cache["rotary_emb.hook_sin"]
            kwargs["position_embeddings"] = (cos.expand(batch, *cos.shape[1:]), sin.expand(batch, *sin.shape[1:]))
        x = resid
        for layer in range(start, self.arch.n_layers if stop is None else stop):
            out = self.bridge.blocks[layer](x, **kwargs)
            x = out[0] if isinstance(out, tuple) else out
        return x

    def unembed_final(self, resid: torch.Tensor) -> torch.Tensor:
        """Final residual [..., pos, d_model] -> logits [..., pos, V] through the forward's own final
        norm and unembedding (the same numbers as the forward's logits; their hooks fire)."""
        return self.bridge.unembed(self.bridge.ln_final(resid))

    # weights and modules ------------------------------------------------------------------------
    @property
    def final_norm(self) -> torch.nn.Module:
        """The HF final norm (LayerNorm or RMSNorm: see :attr:`norm_kind`), called directly (no hooks)."""
        return self.bridge.ln_final.original_component

    @property
    def norm_kind(self) -> str:
        """``"layernorm"`` (centres over d_model, has a bias) or ``"rmsnorm"``."""
        return "layernorm" if isinstance(self.final_norm, torch.nn.LayerNorm) else "rmsnorm"

    @property
    def W_U(self) -> torch.Tensor:  # noqa: N802 - the field's usual name
        """Unembedding [d_model, V]."""
        return self.bridge.W_U

    def unembed(self, normed: torch.Tensor) -> torch.Tensor:
        """Normalised residual [..., d_model] -> logits [..., V]: ``normed @ W_U + b_U`` (no hooks)."""
        logits = normed @ self.bridge.W_U
        bias = getattr(self.bridge, "b_U", None)
        return logits + bias if bias is not None else logits

    def attn_W_O(self, layer: int) -> torch.Tensor:  # noqa: N802
        """Attention output weights of ``layer`` per head: [n_heads, d_head, d_model]."""
        return self.bridge.blocks[layer].attn.W_O

    def mlp_W_out(self, layer: int) -> torch.Tensor:  # noqa: N802
        """MLP output weights of ``layer``: [d_mlp, d_model] (row i: what neuron i writes)."""
        return self.bridge.blocks[layer].mlp.W_out

    def mlp_out_component(self, layer: int) -> torch.nn.Module:
        """The HF module of ``layer``'s MLP output projection (what ROME and FT write, in place):
        a Conv1D on GPT-2, a Linear on Llama (see :meth:`mlp_out_layout`)."""
        component = self.bridge.blocks[layer].mlp.out
        return getattr(component, "_original_component", component)

    def mlp_out_layout(self, layer: int) -> str:
        """How :meth:`mlp_out_component`'s weight is stored: ``"in_out"`` [d_mlp, d_model] (GPT-2's
        Conv1D) or ``"out_in"`` [d_model, d_mlp] (``nn.Linear``)."""
        module = self.mlp_out_component(layer)
        shape, d_mlp, d_model = tuple(module.weight.shape), self.arch.d_mlp, self.arch.d_model
        if type(module).__name__ == "Conv1D" or (shape == (d_mlp, d_model) and d_mlp != d_model):
            return "in_out"
        return "out_in"

    def named_parameters(self) -> Iterator[tuple[str, torch.nn.Parameter]]:
        """Every parameter by its dotted module path (tied weights once)."""
        return self.bridge.named_parameters()

    def submodule(self, path: str) -> torch.nn.Module:
        """The module at a dotted ``path`` of :meth:`named_parameters`' names."""
        return self.bridge.get_submodule(path)

    @property
    def hf_model(self) -> Any:
        """The HF causal LM itself (``generate``; the bridge shares its weights)."""
        return self.bridge.original_model

    def copy(self, revision: str) -> Any:
        """An independent deep copy (bridge and HF weights, gradients off; tokenizer and spec shared)
        under ``revision``: it refers to nothing in this model and outlives its eviction.

        The blocks' capture hooks are removed first (TransformerBridge wires them again on the next
        forward): they are closures over ``weakref.proxy`` of their own block's modules, so a copy
        sharing them would write into the ORIGINAL model and raise ReferenceError once it is gone.
        GPT-2's joint-QKV attention keeps the last forward's pattern (``_pattern``); after a forward
        with gradients it is a non-leaf tensor, which deepcopy refuses: it is dropped (a cache).
        """
        for module in self.bridge.modules():
            teardown = getattr(module, "_teardown_capture_hooks", None)
            if callable(teardown):
                teardown()
            if isinstance(getattr(module, "_pattern", None), torch.Tensor):
                module._pattern = None
        bridge = copy.deepcopy(self.bridge)
        for param in bridge.parameters():
            param.requires_grad_(False)
        return dataclasses.replace(self, bridge=bridge, revision=revision, extras=dict(self.extras))


class _ScaledNorm:
    """An HF LayerNorm / RMSNorm ``module`` called with the scale ``provider`` gives (see
    :meth:`LMInterface.norm_scales`): x [N, d] -> [N, d]."""

    def __init__(self, module: torch.nn.Module, provider: Any, kind: str):
        self.module, self.provider, self.kind = module, provider, kind

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        m = self.module
        xf = x.float()
        if self.kind == "layernorm":
            xf = xf - xf.mean(-1, keepdim=True)
        eps = float(getattr(m, "variance_epsilon", getattr(m, "eps", 1e-5)))
        scale = self.provider((xf.pow(2).mean(-1, keepdim=True) + eps).sqrt())
        out = xf / scale * m.weight.float()
        if getattr(m, "bias", None) is not None:
            out = out + m.bias.float()
        return out.to(x.dtype)
