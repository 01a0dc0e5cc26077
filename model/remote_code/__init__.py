"""Self-contained MiniMind modeling code copied into exported Hugging Face folders (model/convert.py).

Only torch and transformers are imported here (never this repository): the files are loaded by
`AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)` on machines without ParallelMind.
"""
