"""Training: one shared engine (engine.py) and thin stage fronts (train_*.py)."""
