"""Knowledge editing: ROME and fine-tuning (FT-M, FT-L) on isolated copies of a model.

Engine modules (``rome``, ``ft``, ``covariance``, ``evaluate``, ``compare``) are pure functions of a
:class:`~kcircuits.lm.loader.LoadedModel`; ``session`` keeps edited copies registered in the model
worker under ``edit:{session_id}`` so every other endpoint can run on them.
"""

METHODS = ("rome", "ft-m", "ft-l")
