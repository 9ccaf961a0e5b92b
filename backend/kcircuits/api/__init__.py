"""FastAPI application: create_app() wires settings, the model worker, jobs and routes."""
