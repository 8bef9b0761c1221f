#!/usr/bin/env bash
# Decode options on one GPU: XLA options for the decode programs (probed at 96 x 1024 with the
# tuned kernel defaults), then with the best: 96 x 3584 in bf16 and with a float8 KV cache
# (sampler-vs-forward log-prob difference on 2 rows), 96 x 1024 float8, and a profile
# (written for issue 19's second lease as scripts/gpu_issue19b.sh).
#   bash scripts/gpu_decode_options.sh OUT_DIR
set -uo pipefail
OUT=${1:?out dir}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:${PYTHONPATH:-}
B="python3 -m openrs_jax.bench.decode --only jax --batches 96"
date -u
for v in base:'' cublas:'{"xla_gpu_enable_triton_gemm": false}'; do
  name=${v%%:*}; opts=${v#*:}
  echo "== probe $name $opts"
  $B --new 1024 ${opts:+--compiler-options "$opts"} --out /tmp/probe_$name.json 2>&1 | grep -v -i warn | tail -3
done
BEST=$(python3 - <<'PY'
import json, glob
rows = {}
for f in glob.glob("/tmp/probe_*.json"):
    r = json.load(open(f))["rows"][0]
    rows[f.split("probe_")[1][:-5]] = r
json.dump(rows, open("/tmp/probe_all.json", "w"), indent=1)
ok = {k: r for k, r in rows.items() if "tokens_per_s" in r}
best = max(ok, key=lambda k: ok[k]["tokens_per_s"])
print(json.dumps(ok[best]["compiler_options"]) if ok[best]["compiler_options"] else "")
PY
)
cp /tmp/probe_all.json "$OUT/probe.json"
echo "best options: '$BEST'"
echo "== 3584 bf16"
$B --new 3584 --logp-rows 2 ${BEST:+--compiler-options "$BEST"} --out "$OUT/final_3584_bf16.json" 2>&1 | grep -v -i warn | tail -3
echo "== 3584 fp8 kv"
$B --new 3584 --logp-rows 2 --kv-dtype float8_e4m3fn ${BEST:+--compiler-options "$BEST"} --out "$OUT/final_3584_fp8.json" 2>&1 | grep -v -i warn | tail -3
echo "== 1024 fp8 kv"
$B --new 1024 --logp-rows 2 --kv-dtype float8_e4m3fn ${BEST:+--compiler-options "$BEST"} --out "$OUT/final_1024_fp8.json" 2>&1 | grep -v -i warn | tail -3
date -u
