"""The edit comparison run inline, as the CLI and the benchmark run it, for the editing tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kcircuits.config import get_settings
from kcircuits.editing.compare import CompareThresholds
from kcircuits.editing.session import EditRequest
from kcircuits.services.edit_comparison import EditComparison


def compare_inline(base, edited, prompt: str, subject: str, new_target: str, old_target: str | None, *,
                   side_items: Sequence[Mapping[str, Any]] = (), layer: int | None = None, edit_method: str = "rome",
                   circuits: bool = False, method: str | None = None, top_n: int | None = None,
                   thresholds: CompareThresholds | None = None) -> dict[str, Any]:
    """:class:`EditComparison` of ``edited`` against ``base`` (both steps in this process)."""
    req = EditRequest(model=base.spec.id, method=edit_method, prompt=prompt, subject=subject, target=new_target)
    return EditComparison(request=req, old_target=old_target, layer=layer, settings=get_settings(),
                          side_items=side_items, method=method, top_n=top_n,
                          thresholds=thresholds or CompareThresholds(), with_circuits=circuits).run_inline(base, edited)
