"""One process of tests/rollout/test_primary_engine.py: a tiny model sharded (FSDP) over the
devices of every process, a vllm engine built through `build_engine` for a server at --url
(only process 0 may talk to it), one weight push and one generate; the batch this process got
is pickled to --out-dir/process<k>.pkl."""

import argparse
import pickle

from openrs_jax.cli import add_distributed_arguments, run_cli, start_distributed


def main(args) -> int:
    start_distributed(args, log=print)

    from openrs_jax import distributed as dist
    from openrs_jax import sharding as shd
    from openrs_jax.model import create_sharded, tiny
    from openrs_jax.rollout.base import SamplingParams
    from openrs_jax.rollout.build import EngineSpec, VLLMOptions, build_engine

    mesh = shd.make_mesh({"data": 1, "fsdp": -1, "tensor": 1})
    model = create_sharded(tiny(vocab_size=256), mesh, shd.TRAIN_RULES, seed=3)
    q = model.layers[0].attn.q_proj[...]
    assert not q.is_fully_addressable  # the parameters really span the processes
    spec = EngineSpec(kind="vllm", vllm=VLLMOptions(url=args.url, timeout_s=args.timeout, sync_dir=args.sync_dir))
    engine, close = build_engine(spec, model, eos_token_ids=[0], pad_token_id=7, work_dir=args.sync_dir)
    try:
        batch = engine.generate([[5, 6], [9]], 3, SamplingParams(max_new_tokens=4, seed=11))
    finally:
        close()
    with open(f"{args.out_dir}/process{dist.process_index()}.pkl", "wb") as f:
        pickle.dump({"process": dist.process_index(), "batch": batch, "q": dist.to_host(q),
                     "pushed": type(engine).__name__}, f)
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--sync-dir", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--timeout", type=float, default=30.0, help="the engine's retry timeout (s)")
    add_distributed_arguments(ap)
    parsed = ap.parse_args()
    raise SystemExit(run_cli("primary_engine_proc", lambda: main(parsed)))
