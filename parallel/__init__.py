"""Parallel inference core (pure torch): layouts, 2D RoPE, masks. See parallel/columnar.py."""
