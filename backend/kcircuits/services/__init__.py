"""The service layer under the API and the CLI: specs (defaults, limits, checks), one service
function per capability ``(spec, executor, store)``, and executors (the model worker, or inline)."""
