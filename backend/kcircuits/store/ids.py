"""Content-addressed result ids: sha256 of the canonical JSON of everything that fixes the numbers.

The id input ("key") is ``{schema_version, kind, model, revision, libraries, request, dtype,
device_class}``: the request (model, exact prompt, method and every parameter) plus the weight
revision, the versions of the libraries that change numerics, the dtype and the device class.
The key is stored inside each result's provenance, so an id can be re-derived from a stored row
(or an exported file) and checked.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from importlib import metadata
from typing import Any

from kcircuits import __version__
from kcircuits.errors import BadRequest

#: Version of the stored-result wire format; part of every id.
SCHEMA_VERSION = 1
#: Packages whose versions change numerics (recorded in provenance and hashed into ids).
NUMERIC_LIBRARIES = ("torch", "transformers", "transformer_lens")
KEY_FIELDS = ("schema_version", "kind", "model", "revision", "libraries", "request", "dtype", "device_class")
#: A content id: 64 lowercase hex characters (SHA-256).
ID_PATTERN = "[0-9a-f]{64}"
ID_RE = re.compile(f"^{ID_PATTERN}$")
#: Job states after which nothing changes ("interrupted": cut off by a restart).
TERMINAL_JOB_STATES = frozenset({"succeeded", "failed", "cancelled", "interrupted"})
DEVICE_CLASSES = ("cpu", "cuda", "mps")


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace, floats as ``repr``; NaN/inf are refused (they have no JSON form)."""
    _check_finite(obj)
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _check_finite(obj: Any) -> None:
    if isinstance(obj, float) and not math.isfinite(obj):
        raise BadRequest("request values must be finite numbers")
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise BadRequest("request keys must be strings")
            _check_finite(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            _check_finite(value)


def library_versions() -> dict[str, str]:
    """Versions of the numerics-relevant libraries and of kcircuits itself."""
    return dict(_library_versions())


@functools.cache
def _library_versions() -> dict[str, str]:
    versions = {}
    for name in NUMERIC_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    versions["kcircuits"] = __version__
    return versions


def device_class(device: str) -> str:
    """``cpu``/``cuda``/``mps`` for a settings device name (``auto`` asks torch)."""
    name = str(device).split(":")[0].lower()
    if name in DEVICE_CLASSES:
        return name
    from kcircuits.lm.loader import resolve_device

    return resolve_device(device).type


def hash_key(key: dict[str, Any]) -> str:
    """The content id of an id-input dict."""
    return hashlib.sha256(canonical_json(key).encode("utf-8")).hexdigest()


def key_from_provenance(provenance: dict[str, Any]) -> dict[str, Any]:
    """The id input recorded in ``provenance`` (BadRequest when a field is missing)."""
    missing = [f for f in KEY_FIELDS if f not in provenance]
    if missing:
        raise BadRequest(f"provenance lacks {', '.join(missing)}: cannot derive the content id")
    return {f: provenance[f] for f in KEY_FIELDS}


def is_valid_id(value: str) -> bool:
    return isinstance(value, str) and bool(ID_RE.match(value))
