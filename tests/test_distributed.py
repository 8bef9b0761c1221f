"""Who a process is in a multi-process run (openrs_jax.distributed.resolve) under SLURM, Open MPI
4 and 5, MPICH, Kubernetes indexed jobs and explicit flags; the share arithmetic; the runtime's
refusals (a coordinator that does not answer, one-step-off with several processes)."""

import os
import pathlib
import subprocess
import sys

import pytest

from openrs_jax import distributed as dist
from openrs_jax.distributed import DistributedError, ProcessSpec, resolve

REPO = pathlib.Path(__file__).resolve().parents[1]

SLURM = {
    "SLURM_JOB_ID": "4242", "SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "8",
    "SLURM_LOCALID": "1", "SLURM_NODEID": "2", "SLURM_STEP_NODELIST": "gpu[007-010]",
    "SLURM_STEP_TASKS_PER_NODE": "2(x4)",
}


def test_single_process_without_launcher_or_flags():
    assert resolve({}) is None
    assert resolve({"JAX_NUM_PROCESSES": "1"}) is None
    assert resolve(SLURM, num_processes=1) is None  # the flag wins: run alone inside a job step


def test_explicit_flags_and_jax_variables():
    assert resolve({}, coordinator_address="10.0.0.1:1234", num_processes=2, process_id=1) == ProcessSpec(
        "10.0.0.1:1234", 2, 1, None, "flags")
    env = {"JAX_COORDINATOR_ADDRESS": "head", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    assert resolve(env) == ProcessSpec(f"head:{dist.DEFAULT_PORT}", 4, 3, None, "environment")
    assert resolve(env, process_id=0).process_id == 0  # flags win over the environment


def test_slurm_step():
    port = 4242 % 4096 + 65535 - 4096 + 1  # JAX's job-id port
    # Two tasks per node and no device binding: local device = local rank (JAX's rule).
    assert resolve(SLURM) == ProcessSpec(f"gpu007:{port}", 8, 5, (1,), "SLURM")
    bound = {**SLURM, "CUDA_VISIBLE_DEVICES": "3"}  # srun --gpus-per-task=1 bound it already
    assert resolve(bound).local_device_ids is None
    one_per_node = {**SLURM, "SLURM_STEP_TASKS_PER_NODE": "1(x8)", "JAX_COORDINATOR_PORT": "9999"}
    assert resolve(one_per_node) == ProcessSpec("gpu007:9999", 8, 5, None, "SLURM")
    # The batch script itself (no job step): not a multi-process run.
    assert resolve({k: v for k, v in SLURM.items() if k != "SLURM_STEP_NODELIST"}) is None


def test_slurm_node_lists_and_task_counts():
    assert dist.first_slurm_host("node001") == "node001"
    assert dist.first_slurm_host("node001,other") == "node001"
    assert dist.first_slurm_host("gpu[003-005,9],cpu1") == "gpu003"
    assert dist.first_slurm_host("a-b[12,14]") == "a-b12"
    assert [dist.slurm_tasks_on_node("2(x3),1", i) for i in range(4)] == [2, 2, 2, 1]
    with pytest.raises(DistributedError):
        dist.slurm_tasks_on_node("2(x3)", 3)


def test_open_mpi_4_and_5_and_mpich():
    ompi = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "0",
            "OMPI_COMM_WORLD_LOCAL_SIZE": "1"}
    v4 = {**ompi, "OMPI_MCA_orte_hnp_uri": "1531576320.0;tcp://10.96.0.1,10.148.0.1:34911"}
    port = 1531576320 // 4096 % 4096 + 65535 - 4096 + 1
    assert resolve(v4) == ProcessSpec(f"10.96.0.1:{port}", 2, 1, None, "Open MPI")
    with pytest.raises(DistributedError, match="Open MPI 5 does not export one.*--coordinator-address"):
        resolve(ompi)
    assert resolve({**ompi, "JAX_COORDINATOR_ADDRESS": "h0:77"}) == ProcessSpec("h0:77", 2, 1, None, "environment")
    mpich = {"PMI_RANK": "2", "PMI_SIZE": "4", "MPI_LOCALRANKID": "0", "MPI_LOCALNRANKS": "1"}
    assert resolve(mpich, coordinator_address="h0:5") == ProcessSpec("h0:5", 4, 2, None, "flags")


def test_kubernetes_indexed_job():
    env = {"JOB_COMPLETION_INDEX": "3", "JAX_NUM_PROCESSES": "4",
           "JAX_COORDINATOR_ADDRESS": "openrs-workers-0-0.openrs:8476"}
    assert resolve(env) == ProcessSpec("openrs-workers-0-0.openrs:8476", 4, 3, None, "environment")
    with pytest.raises(DistributedError, match="coordinator address"):
        resolve({"JOB_COMPLETION_INDEX": "0", "JAX_NUM_PROCESSES": "4"})
    assert resolve({"JOB_COMPLETION_INDEX": "0"}) is None  # a lone indexed job: one process


def test_incomplete_or_contradictory_settings_are_refused():
    with pytest.raises(DistributedError, match="which one is this"):
        resolve({}, coordinator_address="h:1", num_processes=2)
    with pytest.raises(DistributedError, match="outside 0..1"):
        resolve({}, coordinator_address="h:1", num_processes=2, process_id=2)
    with pytest.raises(DistributedError, match="without --num-processes"):
        resolve({}, process_id=1)
    with pytest.raises(DistributedError, match="not an integer"):
        resolve({"JAX_NUM_PROCESSES": "two"})


def test_shares_cover_every_item_once():
    for n in range(0, 13):
        for count in (1, 2, 3, 5):
            parts = [dist.share(n, i, count) for i in range(count)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            assert max(hi - lo for lo, hi in parts) - min(hi - lo for lo, hi in parts) <= 1


def test_one_process_exchanges_are_identities():
    assert dist.allgather_objects("t", {"a": 1}) == [{"a": 1}]
    assert dist.broadcast_object("t", 5) == 5 and dist.first_set("t", None) is None
    assert dist.any_process("t", True)


def test_overlapped_rollouts_and_split_meshes_are_refused_with_several_processes(monkeypatch):
    from openrs_jax.config import ConfigError, load_config
    from openrs_jax.trainer import setup

    cfg = load_config("quickstart", ["rollout.mode=one_step_off"])
    split = load_config("quickstart", ["mesh.rollout_devices=2"])
    setup.check_multiprocess(cfg)  # one process: fine
    setup.check_multiprocess(split)
    monkeypatch.setattr(dist, "process_count", lambda: 2)
    with pytest.raises(ConfigError, match="one_step_off.*one process only.*rollout.mode: sync"):
        setup.check_multiprocess(cfg)
    with pytest.raises(ConfigError, match="mesh.rollout_devices runs in one process only"):
        setup.check_multiprocess(split)
    setup.check_multiprocess(load_config("quickstart"))


class FakeDevice:
    def __init__(self, process_index, device_id):
        self.process_index, self.id = process_index, device_id

    def __repr__(self):
        return f"d{self.id}"


def test_the_mesh_takes_the_same_devices_from_every_process(monkeypatch):
    from openrs_jax.config import ConfigError, load_config
    from openrs_jax.trainer import setup

    devices = [FakeDevice(p, 4 * p + i) for p in range(2) for i in range(4)]
    monkeypatch.setattr(setup.jax, "devices", lambda: devices)
    monkeypatch.setattr(setup.shd, "make_mesh", lambda sizes, devices: [d.id for d in devices])
    monkeypatch.setattr(dist, "process_count", lambda: 2)
    assert setup.build_meshes(load_config("quickstart"))[0] == list(range(8))
    assert setup.build_meshes(load_config("quickstart", ["mesh.num_devices=4"]))[0] == [0, 1, 4, 5]
    with pytest.raises(ConfigError, match="mesh.num_devices \\(3\\) must be a multiple of 2"):
        setup.build_meshes(load_config("quickstart", ["mesh.num_devices=3"]))


def test_a_coordinator_that_does_not_answer_is_a_one_line_error(tmp_path):
    """Process 1 of 2 with nobody at the coordinator's address: exit 1 and one line naming it
    (XLA's own client would abort with a message blaming another task)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    port = dist_free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "openrs_jax.train", "--output-dir", str(tmp_path / "run"),
         "--coordinator-address", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", "1",
         "--distributed-timeout", "2"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: DistributedError: process 1 of 2 (coordinator 127.0.0.1:{port}, from flags): the coordinator "
        f"(process 0) did not answer at 127.0.0.1:{port} within 2 s ([Errno 111] Connection refused); is it "
        "running, and is that its host and port?")
    assert not (tmp_path / "run").exists()


def dist_free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_signal_on_any_process_stops_every_process(monkeypatch):
    """`Trainer._stop_requested` with 2 processes: the signal number of whichever process got
    one (first in process order) becomes every process's."""
    from openrs_jax.trainer.trainer import Trainer

    trainer = Trainer.__new__(Trainer)
    trainer.stopped_by = None
    monkeypatch.setattr(dist, "process_count", lambda: 2)
    exchanged = []
    monkeypatch.setattr(dist, "first_set", lambda tag, v: exchanged.append((tag, v)) or 15)
    assert trainer._stop_requested() and trainer.stopped_by == 15 and exchanged == [("stop", None)]
    monkeypatch.setattr(dist, "first_set", lambda tag, v: v)
    trainer.stopped_by = None
    assert not trainer._stop_requested() and trainer.stopped_by is None
