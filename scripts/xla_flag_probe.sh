#!/usr/bin/env bash
# Prints the XLA_FLAGS entries (arguments) that this JAX/XLA build accepts: an unknown flag
# aborts the process at backend start-up, so each is tried alone.
for f in "$@"; do
  if XLA_FLAGS="$f" python3 -c "import jax; jax.devices()" >/dev/null 2>&1; then echo -n "$f "; fi
done
echo
