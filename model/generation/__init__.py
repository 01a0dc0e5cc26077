"""The parallel generation engine, in the order a decode step runs through it.

* `session.GenerationSession`: samples are added, prefilled, decoded and retired while it runs
  (`model.parallel_generation.ParallelGenerator.generate` is a loop over one session);
* `state`: per-branch state (`BranchState`, the Python side) and the batch's tensors (`DecodeBatch`);
* `window.DecodeWindow`: the inputs of a run of decode steps with the same structure, planned once;
* `step.decode_step`: the only place the model runs (prefill and decode steps alike);
* `text`: incremental detokenisation and stop strings.

The API is documented in `model/parallel_generation.py`, the state in docs/DESIGN.md.
"""
