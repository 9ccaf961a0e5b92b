"""An app around a worker that already holds the tiny random models (no real weights)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from kcircuits.api.app import create_app
from kcircuits.config import Settings
from kcircuits.lm.worker import ModelWorker


@pytest.fixture
def api_settings(tmp_path) -> Settings:
    return Settings(default_model="tiny-gpt2", test_models=True, data_dir=tmp_path, device="cpu",
                    max_prompt_chars=500, max_prompt_tokens=64, queue_size=8)


@pytest.fixture
def client(api_settings, tiny_gpt2, tiny_llama):
    worker = ModelWorker(api_settings)
    worker.register("tiny-gpt2", tiny_gpt2)
    worker.register("tiny-llama", tiny_llama)
    app = create_app(api_settings, worker=worker, preload=False)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client



@pytest.fixture
def live_server(api_settings):
    """A real uvicorn serving the app (empty worker: routes that need no model) on loopback.

    Yields ``(app, (host, port))``; stops the server afterwards.
    """
    from .live import serve_live

    yield from serve_live(create_app(api_settings, worker=ModelWorker(api_settings), preload=False))
