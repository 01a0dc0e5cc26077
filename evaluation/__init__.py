"""Evaluation and measurement shared by the scripts: task accuracy (parallel vs one at a time) and
benchmark helpers (machine description, timing summaries, JSON output)."""
