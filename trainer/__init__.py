"""Training: one shared engine (trainer/engine/), losses (loss.py), shared flags (args.py) and thin stage fronts
(train_*.py)."""
