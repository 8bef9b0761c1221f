"""Code that runs inside the vLLM server's processes, under the vLLM interpreter.

Stdlib only, and never importing openrs_jax: `vllm_server` puts this directory on the server's
PYTHONPATH (not the package root, whose site-packages could shadow the vLLM environment's),
so its modules import there as top-level `openrs_vllm_*` names.
  - `openrs_vllm_keeper`: the process-group leader that ties vLLM's lifetime to its owner.
  - `openrs_vllm_auth`: ASGI middleware that guards the weight-sync routes.
"""
