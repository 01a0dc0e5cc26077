"""Training: one shared engine (trainer/engine/), losses (loss.py), shared flags (args/) and thin stage fronts
(train_*.py)."""
