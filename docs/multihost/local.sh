#!/usr/bin/env bash
# N processes of one run on this host, started the way a cluster launcher starts them on N
# hosts (docs/MULTIHOST.md): process k gets --coordinator-address 127.0.0.1:PORT
# --num-processes N --process-id k, and its own devices.
#
#   docs/multihost/local.sh 2 --gpus 2 -- python -m openrs_jax.train --config openrs3 ...
#       two processes on a 4-GPU host, GPUs 0,1 and 2,3 (CUDA_VISIBLE_DEVICES)
#   docs/multihost/local.sh 2 --cpu-devices 4 -- python -m openrs_jax.train --config quickstart
#       two processes with 4 fake CPU devices each (how the tests run it)
#
# Exits with the first non-zero exit code of the processes (0 when all succeed). DRY_RUN=1
# prints each process's environment and command instead of running them.
set -euo pipefail
usage() { echo "usage: $0 N (--gpus G | --cpu-devices K) -- COMMAND..." >&2; exit 2; }
[ $# -ge 1 ] || usage
N=$1; shift
GPUS=""; CPUS=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  case $1 in
    --gpus) GPUS=$2; shift 2 ;;
    --cpu-devices) CPUS=$2; shift 2 ;;
    *) usage ;;
  esac
done
[ "${1:-}" = "--" ] || usage
shift
[ $# -gt 0 ] && { [ -n "$GPUS" ] || [ -n "$CPUS" ]; } || usage
PORT=${PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}

pids=()
for ((k = 0; k < N; k++)); do
  if [ -n "$GPUS" ]; then
    devices="CUDA_VISIBLE_DEVICES=$(seq -s, $((k * GPUS)) $((k * GPUS + GPUS - 1)))"
  else
    devices="XLA_FLAGS=--xla_force_host_platform_device_count=$CPUS JAX_PLATFORMS=cpu"
  fi
  cmd=("$@" --coordinator-address "127.0.0.1:$PORT" --num-processes "$N" --process-id "$k")
  if [ -n "${DRY_RUN:-}" ]; then
    echo "$devices ${cmd[*]}"
    continue
  fi
  env $devices "${cmd[@]}" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || { code=$?; [ $status -ne 0 ] || status=$code; }
done
exit $status
