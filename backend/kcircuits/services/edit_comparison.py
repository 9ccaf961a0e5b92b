"""The pre/post comparison of one edit, as the Edit view, the CLI and the edit benchmark show it.

Two model steps: :meth:`EditComparison.base_step` on the base model (the shared counterfactual and
foil, the pre side's lens and circuit, every head's state, the analysis state), then
:meth:`EditComparison.edited_step` on the edited copy (the post side, the head-output diff and the
edit analysis against the base step). The API runs each step in the worker that owns its model; the
CLI and benchmarks run both inline (:meth:`EditComparison.run_inline`). :meth:`assemble` builds the
one result (kind ``edit_comparison``) from the two.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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

    def _circuit(self, model: LoadedModel, target: str | None, counterfactual: Mapping[str, Any] | None,
                 top_n: int | None) -> dict[str, Any]:
        """The circuit for ``target`` with the shared counterfactual: {"circuit", "error"} (None with
        the reason when it cannot be computed or is not asked for)."""
        from kcircuits.editing.compare import circuit_side
        from kcircuits.services.capabilities import with_roles

        if counterfactual is None:
            return {"circuit": None, "error": None}
        circuit, error = circuit_side(model, self.request.prompt, target, self.request.subject, counterfactual,
                                      self.method, top_n)
        return {"circuit": with_roles(model, circuit) if circuit else None, "error": error}

    def _side(self, model: LoadedModel, circuit_target: str | None, counterfactual: Mapping[str, Any] | None
              ) -> dict[str, Any]:
        """Lens for the new and old targets and, with circuits, the circuit for ``circuit_target``."""
        return {"lens": self._lens(model, self.request.target), "lens_old": self._lens(model, self.old_target),
                **self._circuit(model, circuit_target, counterfactual, self.top_n)}

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

    def fair_size(self, pre: Mapping[str, Any], post: Mapping[str, Any]) -> int | None:
        """The size both sides move to when one is unfaithful at the default size: the smallest size of
        the faithfulness curves (each circuit's, computed once), above the default, at which both
        reach ``min_faithfulness``. None when no move is needed or possible, or the size was given."""
        from kcircuits.editing.compare import holds, side_status

        a, b = pre["circuit"], post["circuit"]
        if self.top_n is not None or a is None or b is None:
            return None
        if all(side_status(c, self.thresholds)["usable"] for c in (a, b)):
            return None

        def faithful(circuit: Mapping[str, Any]) -> dict[int, bool]:
            return {int(p["size"]): holds(p["faithfulness"], self.thresholds.min_faithfulness)
                    for p in circuit["curve"]["points"]}

        start = max(int(a["params"]["top_n"] or 0), int(b["params"]["top_n"] or 0))
        fa, fb = faithful(a), faithful(b)
        return next((n for n in sorted(set(fa) & set(fb)) if n > start and fa[n] and fb[n]), None)

    def run(self, on_base: Callable[[Callable[[LoadedModel], Any]], Any],
            on_edited: Callable[[Callable[[LoadedModel], Any]], Any]) -> dict[str, Any]:
        """The whole comparison; ``on_base(step)`` / ``on_edited(step)`` run ``step(model)`` with the
        base / edited model (in its worker, or inline). When a side is unfaithful at the default size,
        both circuits are recomputed at :meth:`fair_size` (the same size on both sides)."""
        pre = on_base(self.base_step)
        post = on_edited(lambda model: self.edited_step(model, pre))
        from kcircuits.circuits.discover import DEFAULT_EDGE_FRACTION

        size = self.fair_size(pre, post) if self.with_circuits else None
        grown_from = None
        if size is not None:
            grown_from = {name: side_status_summary(side["circuit"]) for name, side in (("pre", pre), ("post", post))}
            cf = pre["counterfactual"]
            pre = {**pre, **on_base(lambda model: self._circuit(model, self.old_target, cf, size))}
            post = {**post, **on_edited(lambda model: self._circuit(model, self.request.target, cf, size))}
        result = self.assemble(pre, post)
        if result["circuit"] is not None:
            result["circuit"]["size_rule"] = {
                "rule": (f"the requested size, or by default {DEFAULT_EDGE_FRACTION:.0%} of the graph's edges; when a side is below "
                         f"{self.thresholds.min_faithfulness:g} faithfulness there, both sides move to the "
                         "smallest size of their faithfulness curves at which both reach it"),
                "requested": self.top_n, "used": size, "grown_from": grown_from}
        return result

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
        """:meth:`run` with both models in this process (CLI, benchmarks, tests)."""
        return self.run(lambda step: step(base), lambda step: step(edited))


def side_status_summary(circuit: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """{"edges", "faithfulness"} of a circuit before it was regrown."""
    if circuit is None:
        return None
    return {"edges": int(circuit["metrics"]["edges"]), "faithfulness": circuit["metrics"].get("faithfulness")}
