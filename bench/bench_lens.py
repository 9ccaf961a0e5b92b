"""Lens request time / one plain forward pass, on SmolLM2 for a 12-token prompt (target <= 1.5).

Measures the full API path (HTTP request -> worker -> lens -> JSON) and the engine call alone,
each against a plain forward of the same tokens in the same run. Usage: python bench/bench_lens.py
"""

from __future__ import annotations

import torch

from timing import median_time


def main() -> None:
    from fastapi.testclient import TestClient

    from kcircuits.api.app import create_app
    from kcircuits.circuits.lens import LensRequest, logit_lens
    from kcircuits.config import Settings
    from kcircuits.lm.loader import load_model
    from kcircuits.lm.worker import ModelWorker

    torch.set_num_threads(2)
    settings = Settings(device="cpu")
    model = load_model("smollm2-135m", settings)
    prompt = "The Eiffel Tower, a famous landmark, is located in the city of"
    tokens = model.tokenize(prompt)
    paris = model.first_token_id(" Paris")

    def forward():
        with torch.inference_mode():
            model.bridge(tokens)

    def engine():
        logit_lens(model, tokens, LensRequest(top_k=5, target_id=paris, subject_positions=(1, 2, 3)))

    worker = ModelWorker(settings)
    worker.register("smollm2-135m", model)
    app = create_app(settings, worker=worker, preload=False)
    with TestClient(app) as client:
        def request():
            res = client.post("/api/lens", json={"prompt": prompt, "target": " Paris", "top_k": 5})
            assert res.status_code == 200

        t_forward = median_time(forward, repeats=7)
        t_engine = median_time(engine, repeats=7)
        t_request = median_time(request, repeats=7)
    print(f"SmolLM2-135M, {tokens.shape[1]} tokens, {torch.get_num_threads()} threads")
    print(f"plain forward          {t_forward * 1000:8.1f} ms")
    print(f"lens engine call       {t_engine * 1000:8.1f} ms   ratio {t_engine / t_forward:5.2f}")
    print(f"lens HTTP request      {t_request * 1000:8.1f} ms   ratio {t_request / t_forward:5.2f}  (target <= 1.5)")


if __name__ == "__main__":
    main()
