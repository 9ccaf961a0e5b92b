"""The pre/post comparison of one edit, as the Edit view, the CLI and the edit benchmark show it.

Two model steps: :meth:`EditComparison.base_step` on the base model (the shared counterfactual and
foil, the pre side's lens and circuit, every head's state, the analysis state), then
:meth:`EditComparison.edited_step` on the edited copy (the post side, the head-output diff and the
edit analysis against the base step). The API runs each step in the worker that owns its model; the
CLI and benchmarks run both inline (:meth:`EditComparison.run_inline`). :meth:`assemble` builds the
one result (kind ``edit_comparison``) from the two.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kcircuits.editing.compare import CompareThresholds
from kcircuits.editing.session import EditRequest
from kcircuits.lm.loader import LoadedModel


@dataclass
class EditComparison:
    """One edit's comparison settings. ``side_items``: the evaluation's locality items ({"prompt",
    "subject", "kind"}), whose neighbour and same-subject prompts give the side effects;
    ``with_circuits=False`` skips both circuits (the CLI's fast default)."""

    request: EditRequest
    old_target: str | None
    layer: int | None
    settings: Any
    side_items: Sequence[Mapping[str, Any]] = ()
    method: str | None = None
    top_n: int | None = None
    thresholds: CompareThresholds = field(default_factory=CompareThresholds)
    session_id: str | None = None
    with_circuits: bool = True

    def __post_init__(self) -> None:
        from kcircuits.circuits.discover import DEFAULT_METHOD

        self.method = self.method or DEFAULT_METHOD

    def _lens(self, model: LoadedModel, target: str | None) -> dict[str, Any]:
        from kcircuits.services.capabilities import compute_lens
        from kcircuits.services.specs import LensSpec

        req = self.request
        own = self.session_id is not None and model.revision.endswith(self.session_id)
        spec = LensSpec(prompt=req.prompt, target=target, subject=req.subject, top_k=5,
                        session=self.session_id if own else None)
        return compute_lens(model, spec, self.settings)

    def _side(self, model: LoadedModel, circuit_target: str | None, counterfactual: Mapping[str, Any] | None
              ) -> dict[str, Any]:
        """Lens for the new and old targets and, with circuits, the circuit for ``circuit_target``
        with the shared counterfactual (None with ``error`` when it cannot be computed)."""
        from kcircuits.editing.compare import circuit_side
        from kcircuits.services.capabilities import with_roles

        req = self.request
        circuit, error = None, None
        if counterfactual is not None:
            circuit, error = circuit_side(model, req.prompt, circuit_target, req.subject, counterfactual,
                                          self.method, self.top_n)
        return {"lens": self._lens(model, req.target), "lens_old": self._lens(model, self.old_target),
                "circuit": with_roles(model, circuit) if circuit else None, "error": error}

    def base_step(self, model: LoadedModel) -> dict[str, Any]:
        """On the base model: the counterfactual (picked here, used by both sides), the pre side, the
        head states and the analysis state."""
        from kcircuits.circuits.subject import subject_positions
        from kcircuits.editing import analysis as ana
        from kcircuits.editing import compare as cmp

        req, old, k = self.request, self.old_target, self.thresholds.top_k
        cf = None
        if self.with_circuits:
            cf = cmp.pick_counterfactual(model, req.prompt, old, req.subject, avoid=[req.target])
        positions = subject_positions(model, req.prompt, req.subject)
        targets = cmp.edit_targets(model, req.target, old)
        return {**self._side(model, old, cf), "counterfactual": cf, "positions": positions, "targets": targets,
                "heads": cmp.head_state(model, req.prompt, positions, targets, k),
                "subject_ids": cmp.subject_token_ids(model, req.prompt, positions),
                "spellings": cmp.target_spellings(model, req.target, old),
                "analysis": ana.analysis_state(model, req.prompt, req.subject, targets, self.side_items, k)}

    def edited_step(self, model: LoadedModel, pre: Mapping[str, Any]) -> dict[str, Any]:
        """On the edited copy, against :meth:`base_step`'s ``pre``: the post side, the head-output
        diff and the edit analysis."""
        from kcircuits.editing import analysis as ana
        from kcircuits.editing import compare as cmp

        req, targets, k = self.request, pre["targets"], self.thresholds.top_k
        side = self._side(model, req.target, pre["counterfactual"])
        state = cmp.head_state(model, req.prompt, pre["positions"], targets, k)
        after = ana.analysis_state(model, req.prompt, req.subject, targets, self.side_items, k)
        return {**side, "heads": cmp.head_output_diff(model, pre["heads"], state, targets, pre["subject_ids"],
                                                      self.thresholds, pre["spellings"]),
                "analysis": ana.edit_analysis(model, pre["analysis"], after, targets, pre["spellings"],
                                              self.layer, req.method, self.thresholds)}

    def assemble(self, pre: Mapping[str, Any], post: Mapping[str, Any]) -> dict[str, Any]:
        """The comparison result: lens curves, the fair circuit comparison, the head diff, the analysis."""
        from kcircuits.editing import compare as cmp

        req = self.request
        circuit = None
        if self.with_circuits:
            comparison = cmp.compare_circuits(pre["circuit"], post["circuit"], self.thresholds,
                                              {"pre": pre["error"], "post": post["error"]})
            circuit = {"pre": pre["circuit"], "post": post["circuit"],
                       "targets": {"pre": self.old_target, "post": req.target},
                       "counterfactual": pre["counterfactual"], **comparison}
        pre_curves, post_curves = cmp.curves(pre["lens"], pre["lens_old"]), cmp.curves(post["lens"], post["lens_old"])
        lens = {"pre": pre["lens"], "post": post["lens"],
                "curves": {name: {"pre": pre_curves[name], "post": post_curves[name]} for name in ("new", "old")}}
        return {"kind": "edit_comparison", "session_id": self.session_id, "method": self.method, "top_n": self.top_n,
                "edit_method": req.method, "thresholds": self.thresholds.as_dict(), "lens": lens,
                "circuit": circuit, "heads": post["heads"], "analysis": post["analysis"]}

    def run_inline(self, base: LoadedModel, edited: LoadedModel) -> dict[str, Any]:
        """Both steps in this process (CLI, benchmarks, tests)."""
        pre = self.base_step(base)
        return self.assemble(pre, self.edited_step(edited, pre))
