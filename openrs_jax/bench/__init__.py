"""Benchmarks (layer L6): run on the GPU machine from source; each writes JSON and prints a
table. `python -m openrs_jax.bench.<name> --help`."""
