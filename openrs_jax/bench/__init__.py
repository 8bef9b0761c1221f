"""Benchmarks (layer L6): run on the GPU machine from source; each writes JSON and prints a
table. `python -m openrs_jax.bench.<name> --help`.

What each measures:
- `python -m openrs_jax.bench` (`__main__`, `openrs-bench`): the GRPO update, the reference
  forward and generation, JAX against PyTorch in one run; its workers: `update` (JAX),
  `torch_trl` (the PyTorch reference), on `spec`'s shape and batch, run by `workers`.
- `decode`: decode throughput of the `jax` engine next to HF `generate` and the HBM roofline.
- `eval_throughput`: the evaluation path's throughput on the real prompts.
- `load_forward`: checkpoint load time and forward time.
- `logprobs`: chunked against naive per-token log-probs, forward + backward.
Shared: `flops` (model FLOPs and bytes), `runner` (a measurement in its own process, its JSON
read back), `common` (timing, memory, device ceilings, records and tables).
"""
