"""The one place that builds a rollout engine (layer L4): the trainer, `evaluate` and
`generate` all call `build_engine`, so an engine is configured the same way everywhere.

    build_engine(spec, model, ...) -> (engine, close)

`spec.kind` "jax" wraps the model in the built-in sampler on a mesh; "vllm" connects to a
server at `spec.vllm.url`, or starts one (`spec.vllm.launch`) from an HF directory of the
model (written to `work_dir` when the caller has none), and, when asked, pushes the model's
weights so the server samples from exactly these parameters. `close()` releases everything
the builder started (device buffers, the server process group).

Several processes: the jax engine runs on the process-spanning mesh in every process; a vllm
engine (and a launched server) exists in process 0 only, behind `PrimaryEngine` everywhere
(rollout/primary.py), so one client talks to one server and the batch is broadcast.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Callable, Literal, Sequence

from openrs_jax.rollout.base import RolloutEngine


@dataclasses.dataclass(frozen=True)
class VLLMOptions:
    """How to reach (or start) a vLLM server. Exactly one of `url` or `launch`."""

    url: str | None = None
    launch: bool = False
    server_args: tuple[str, ...] = ()
    gpu_memory_utilization: float | None = None
    max_model_len: int | None = None
    api_key: str | None = None
    timeout_s: float = 600.0
    sync_dir: str | None = None  # None: <work_dir>/vllm_weights
    python: str | None = None  # None: vllm_server.default_python()
    startup_timeout: float = 600.0
    push_weights: bool = True  # after connecting, sync the given model's weights to the server
    logprobs_mode: str = "processed_logprobs"  # the server's --logprobs-mode (launched: set; else: as started)


@dataclasses.dataclass(frozen=True)
class EngineSpec:
    """Which engine and its options; `jax_options` go to `JaxEngine` as keyword arguments
    (max_batch_size, decode_attention, pow2_rows, prompt_bucket, ...)."""

    kind: Literal["jax", "vllm"] = "jax"
    jax_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    vllm: VLLMOptions = VLLMOptions()

    @classmethod
    def from_run_config(cls, cfg) -> "EngineSpec":
        """The spec of a run (`openrs_jax.config.RunConfig`): its `rollout` section, and the
        vLLM log-prob mode its loss needs (`RunConfig.sampler_logprobs_mode`)."""
        rollout = cfg.rollout
        return cls(
            kind=rollout.engine,
            jax_options={"max_batch_size": rollout.batch_size or cfg.completions_per_step,
                         # One prompt region: the same rollout programs for every step's prompts.
                         "max_prompt_len": cfg.data.max_prompt_length,
                         "decode_attention": rollout.decode_attention},
            vllm=VLLMOptions(
                url=None if rollout.vllm_launch else rollout.vllm_server_url,
                launch=rollout.vllm_launch,
                server_args=tuple(rollout.vllm_server_args),
                gpu_memory_utilization=rollout.vllm_gpu_memory_utilization,
                max_model_len=rollout.vllm_max_model_len,
                api_key=rollout.vllm_api_key,
                timeout_s=rollout.vllm_timeout_s,
                sync_dir=rollout.vllm_sync_dir,
                logprobs_mode=cfg.sampler_logprobs_mode,
            ),
        )


def build_engine(
    spec: EngineSpec,
    model: Any,
    *,
    eos_token_ids: Sequence[int],
    pad_token_id: int,
    work_dir: str | pathlib.Path,
    tokenizer: Any = None,
    mesh: Any = None,
    rules: dict[str, Any] | None = None,
    hf_dir: str | pathlib.Path | None = None,
    log: Callable[[str], None] = lambda msg: None,
) -> tuple[RolloutEngine, Callable[[], None]]:
    """(engine, close). `model`: an NNX model (None only for vllm with `hf_dir` and no weight
    push). `hf_dir`: an HF directory of the same weights a launched server can start from
    (else one is written to `work_dir/vllm_init`). `work_dir` also holds the server log and,
    by default, the weight-sync directory."""
    work_dir = pathlib.Path(work_dir)
    if spec.kind == "jax":
        from openrs_jax.rollout.jax_engine import JaxEngine

        if model is None:
            raise ValueError("the jax engine needs the model's weights")
        engine = JaxEngine(model, eos_token_ids=eos_token_ids, pad_token_id=pad_token_id, mesh=mesh, rules=rules,
                           **spec.jax_options)
        return engine, engine.close
    if spec.kind != "vllm":
        raise ValueError(f"unknown rollout engine {spec.kind!r} (jax or vllm)")
    from openrs_jax import distributed as dist

    if dist.process_count() > 1:
        from openrs_jax.rollout.primary import PrimaryEngine, host_model

        # The parameters span processes: every process gathers them (a collective), process 0
        # alone builds the client (and the server) from the gathered copy.
        model = host_model(model) if model is not None else None
        inner, close = (_build_vllm(spec, model, eos_token_ids, pad_token_id, work_dir, tokenizer, hf_dir, log)
                        if dist.is_primary() else (None, lambda: None))
        engine = PrimaryEngine(inner)
        return engine, close
    return _build_vllm(spec, model, eos_token_ids, pad_token_id, work_dir, tokenizer, hf_dir, log)


def _build_vllm(spec: EngineSpec, model: Any, eos_token_ids: Sequence[int], pad_token_id: int,
                work_dir: pathlib.Path, tokenizer: Any, hf_dir: str | pathlib.Path | None,
                log: Callable[[str], None]) -> tuple[RolloutEngine, Callable[[], None]]:
    from openrs_jax.rollout import vllm_server as vs
    from openrs_jax.rollout.vllm_engine import RetryPolicy, VLLMEngine

    opts = spec.vllm
    if bool(opts.url) == bool(opts.launch):
        raise ValueError("the vllm engine needs exactly one of a server URL or launch=True")
    closers: list[Callable[[], None]] = []

    def close() -> None:
        for fn in reversed(closers):
            fn()

    url = opts.url
    try:
        if opts.launch:
            start_dir = hf_dir
            if start_dir is None:
                import jax.numpy as jnp

                from openrs_jax.weights import save_hf

                start_dir = save_hf(model, work_dir / "vllm_init", tokenizer=tokenizer,
                                    dtype=jnp.dtype(model.config.dtype), overwrite=True)
            extra = list(opts.server_args)
            if "--logprobs-mode" not in extra:
                extra += ["--logprobs-mode", opts.logprobs_mode]
            if opts.gpu_memory_utilization is not None:
                extra += ["--gpu-memory-utilization", str(opts.gpu_memory_utilization)]
            if opts.max_model_len:
                extra += ["--max-model-len", str(opts.max_model_len)]
            server = vs.VLLMServer(str(start_dir), port=vs.free_port(), api_key=opts.api_key, python=opts.python,
                                   extra_args=extra, log_path=str(work_dir / "vllm_server.log"),
                                   startup_timeout=opts.startup_timeout)
            log(f"starting vLLM: {' '.join(server.command())} (log {server.log_path})")
            server.start()
            closers.append(server.stop)
            url = server.url
        assert url is not None  # opts.url, or the server just launched (checked above: one of them)
        engine = VLLMEngine(url, sync_dir=str(opts.sync_dir or work_dir / "vllm_weights"),
                            eos_token_ids=eos_token_ids, pad_token_id=pad_token_id, api_key=opts.api_key,
                            retry=RetryPolicy(timeout=opts.timeout_s), logprobs_mode=opts.logprobs_mode)
        closers.append(engine.close)
        if opts.push_weights and model is not None:
            engine.update_weights(model)  # the server must sample from exactly these weights
    except BaseException:
        close()
        raise
    return engine, close
