"""The bundled demo corpus generator: deterministic English text, conversations and checkable tasks.

`corpus` assembles the files of `dataset/` (run `python scripts/build_demo_data.py`); `text` and
`tasks` write the documents and the tasks; `words` holds the vocabulary and small world tables.
Nothing in the training pipeline depends on this package.
"""
