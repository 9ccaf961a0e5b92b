"""Settings (environment prefix ``KCIRCUITS_``); read through the cached :func:`get_settings`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path.home() / ".kcircuits"


class Settings(BaseSettings):
    """Operator settings. Requests never name paths; operators do, here."""

    model_config = SettingsConfigDict(env_prefix="KCIRCUITS_", env_file=".env", extra="ignore")

    default_model: str = "smollm2-135m"
    #: Models booted at start-up (comma separated ids); the default model is always included.
    preload_models: str = ""
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dtype: str = "float32"  # float32 | float16 | bfloat16
    cache_dir: Path = Field(default_factory=lambda: _default_home() / "cache")
    data_dir: Path = Field(default_factory=lambda: _default_home() / "data")
    database_url: str | None = None  # default: SQLite file in data_dir
    #: The built dashboard (``make frontend``); the browser tests point it at the test build.
    static_dir: Path = Field(default_factory=lambda: Path(__file__).resolve().parent / "static")
    #: Extra local model folders, JSON object {"my-model": "/path/to/hf-folder"}.
    local_models: dict[str, str] = Field(default_factory=dict)
    #: Also offer small random-weight models (tiny-gpt2, tiny-llama, gpt2-small-random): tests, demos.
    test_models: bool = False
    #: Allow loading hub models (gpt2, tinyllama...) from the Hugging Face hub or its cache.
    allow_hub: bool = True

    # Request limits
    max_prompt_chars: int = 2000
    max_prompt_tokens: int = 128
    max_top_k: int = 100
    max_body_bytes: int = 1_000_000

    # Worker
    queue_size: int = 16
    request_timeout_s: float = 120.0
    max_loaded_models: int = 2

    # Editing sessions
    max_edit_sessions: int = 4
    edit_session_ttl_s: int = 3600
    #: Operator-provided plain-text file for ROME's key covariance (source "file"); never from a request.
    edit_covariance_text: Path | None = None

    log_level: str = "INFO"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests call ``get_settings.cache_clear()`` after changing env."""
    return Settings()
