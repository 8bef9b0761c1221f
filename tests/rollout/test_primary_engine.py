"""The vllm engine in a 2-process run (2 processes x 4 CPU devices, FSDP over all 8): only
process 0 talks to the server (a stand-in, FakeVLLM), the weights pushed are the whole
process-spanning model, and both processes return the same RolloutBatch; when process 0 cannot
reach the server, its error stops process 1 (which waits for the batch) with that error."""

import pathlib
import pickle

import numpy as np
import pytest
from safetensors.numpy import load_file

from multiprocess_utils import free_port, launch
from openrs_jax.rollout.base import SamplingParams
from test_vllm_engine import FakeVLLM, make_engine

HERE = pathlib.Path(__file__).resolve().parent


@pytest.mark.slow  # 23 s on 2 CPU cores (45 when busy): two JAX processes
def test_only_process_0_talks_to_the_server_and_every_process_gets_the_batch(tmp_path):
    fake = FakeVLLM()
    try:
        group = launch(["--url", fake.url, "--sync-dir", str(tmp_path / "sync"), "--out-dir", str(tmp_path)],
                       processes=2, devices=4, log_dir=tmp_path / "logs", script=str(HERE / "primary_engine_proc.py"))
        assert group.wait(600) == [0, 0], group.output(0)[-3000:] + group.output(1)[-3000:]
        got = [pickle.loads((tmp_path / f"process{k}.pkl").read_bytes()) for k in range(2)]
        paths = fake.paths()
    finally:
        fake.close()
    # One client: one weight push (one reload) and the completion requests of one generate call.
    assert paths.count("/collective_rpc") == 1
    b0, b1 = got[0]["batch"], got[1]["batch"]
    for field in ("completion_ids", "completion_mask", "logprobs", "lengths"):
        np.testing.assert_array_equal(getattr(b0, field), getattr(b1, field))
    assert b0.finish_reasons == b1.finish_reasons and b0.prompt_ids == b1.prompt_ids == [[5, 6], [9]]
    # The same rows as one process talking to the server itself.
    fake2 = FakeVLLM()
    try:
        want = make_engine(fake2.url, tmp_path / "single").generate([[5, 6], [9]], 3,
                                                                    SamplingParams(max_new_tokens=4, seed=11))
        assert paths.count("/v1/completions") == fake2.paths().count("/v1/completions")
    finally:
        fake2.close()
    np.testing.assert_array_equal(b0.completion_ids, want.completion_ids)
    np.testing.assert_array_equal(b0.logprobs, want.logprobs)
    # The pushed safetensors hold the whole (gathered) q projection of layer 0.
    pushed = load_file(str(tmp_path / "sync" / "v00000001" / "model.safetensors"))
    np.testing.assert_array_equal(pushed["model.layers.0.self_attn.q_proj.weight"], got[0]["q"].T)


@pytest.mark.slow  # 22 s on 2 CPU cores (40 when busy)
def test_an_error_in_process_0_stops_process_1_with_that_error(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    group = launch(["--url", url, "--sync-dir", str(tmp_path / "sync"), "--out-dir", str(tmp_path), "--timeout", "1"],
                   processes=2, devices=4, log_dir=tmp_path / "logs", script=str(HERE / "primary_engine_proc.py"))
    assert group.wait(600) == [1, 1], group.output(0)[-3000:] + group.output(1)[-3000:]
    line0 = [l for l in group.output(0).splitlines() if l.startswith("[process 0 of 2] error:")]
    assert len(line0) == 1 and "VLLMUnavailableError" in line0[0] and url in line0[0]
    line1 = [l for l in group.output(1).splitlines() if l.startswith("error:")]
    assert line1 == [f"error: process 0 of 2 stopped the run: {line0[0].removeprefix('[process 0 of 2] error: ')}"]
    assert not list(tmp_path.glob("process*.pkl"))
