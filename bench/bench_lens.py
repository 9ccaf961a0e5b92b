"""Lens request time / one plain forward pass, on SmolLM2 for a 12-token prompt (target <= 1.5).

Measures, each against a plain forward of the same tokens in the same run: the engine call and
the full API path (HTTP request -> worker -> lens -> JSON) with an empty prefix cache ("cold"),
and the API path when the prompt one word shorter was just requested ("typing": the live lens's
case, where earlier positions come from the prefix cache). Usage: python bench/bench_lens.py
"""

from __future__ import annotations

import statistics
import time

import torch

from timing import median_time


def main() -> None:
    from fastapi.testclient import TestClient

    from kcircuits.api.app import create_app
    from kcircuits.circuits.lens import PREFIX_CACHE, LensRequest, logit_lens
    from kcircuits.config import Settings
    from kcircuits.lm.loader import load_model
    from kcircuits.lm.worker import ModelWorker

    torch.set_num_threads(2)
    settings = Settings(device="cpu")
    model = load_model("smollm2-135m", settings)
    prompt = "The Eiffel Tower, a landmark, is in the city of"
    typed_before = prompt.rsplit(" ", 1)[0]  # the prompt one word earlier, as the user types
    tokens = model.tokenize(prompt)
    paris = model.first_token_id(" Paris")

    def forward():
        with torch.inference_mode():
            model.logits(tokens)

    def engine_cold():
        logit_lens(model, tokens, LensRequest(top_k=5, target_id=paris, subject_positions=(1, 2, 3)), cache=None)

    worker = ModelWorker(settings)
    worker.register("smollm2-135m", model)
    app = create_app(settings, worker=worker, preload=False)
    body = {"prompt": prompt, "target": " Paris", "top_k": 5}
    with TestClient(app) as client:
        def request_cold():
            PREFIX_CACHE.clear()
            assert client.post("/api/lens", json=body).status_code == 200

        def request_typing():
            PREFIX_CACHE.clear()
            assert client.post("/api/lens", json={**body, "prompt": typed_before}).status_code == 200
            start = time.perf_counter()
            assert client.post("/api/lens", json=body).status_code == 200
            typing_times.append(time.perf_counter() - start)

        typing_times: list[float] = []
        t_forward = median_time(forward, repeats=7)
        t_engine = median_time(engine_cold, repeats=7)
        t_cold = median_time(request_cold, repeats=7)
        for _ in range(7):
            request_typing()
        t_typing = statistics.median(typing_times[1:])
    print(f"SmolLM2-135M, {tokens.shape[1]} tokens, {torch.get_num_threads()} threads")
    print(f"plain forward                       {t_forward * 1000:8.1f} ms")
    print(f"lens engine call, cold              {t_engine * 1000:8.1f} ms   ratio {t_engine / t_forward:5.2f}")
    print(f"lens HTTP request, cold             {t_cold * 1000:8.1f} ms   ratio {t_cold / t_forward:5.2f}  (target <= 1.5)")
    print(f"lens HTTP request, typing one word  {t_typing * 1000:8.1f} ms   ratio {t_typing / t_forward:5.2f}  (target <= 1.5)")


if __name__ == "__main__":
    main()
