"""Models: MiniMind (with 2D RoPE), LoRA, checkpoints, KV cache, and Hugging Face model glue."""
