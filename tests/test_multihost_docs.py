"""The multi-host launch files in docs/multihost/ (docs/MULTIHOST.md): the sbatch script's srun
line and the JobSet's container command are our train CLI with a config that loads and whose
batch splits over the job's devices, and the environment each launcher gives process k makes
it process k of N with the right coordinator; local.sh gives each process its own flags."""

import os
import pathlib
import re
import shlex
import subprocess

import pytest
import yaml

from openrs_jax import distributed as dist
from openrs_jax.config import load_config
from openrs_jax.train import build_parser

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def train_args(argv: list[str]) -> list[str]:
    """The arguments after `python -m openrs_jax.train` in a command line."""
    i = argv.index("-m")
    assert argv[i - 1] == "python" and argv[i + 1] == "openrs_jax.train", argv
    return argv[i + 2 :]


def check_train_command(args: list[str], devices: int):
    parsed = build_parser().parse_args(args)
    cfg = load_config(parsed.config, parsed.overrides)
    assert cfg.completions_per_step % devices == 0 and cfg.micro_batch_size % devices == 0, (
        f"{cfg.micro_batch_size} completions per micro-batch do not split over {devices} devices")
    return parsed


def test_sbatch_script_starts_one_process_per_node():
    text = (DOCS / "multihost" / "openrs3.sbatch").read_text()
    sbatch = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", text, re.M))
    nodes, per_node, gpus = int(sbatch["nodes"]), int(sbatch["ntasks-per-node"]), int(sbatch["gpus-per-node"])
    assert per_node == 1  # one process drives all of its node's GPUs
    srun = re.search(r"^srun .*?(?<!\\)$", text, re.M | re.S).group(0).replace("\\\n", " ")
    argv = shlex.split(srun.replace('"$RUN_DIR"', "/runs/x").replace("$RESUME", ""))
    assert "--kill-on-bad-exit=1" in argv[: argv.index("python")]
    parsed = check_train_command(train_args(argv), nodes * gpus)
    assert parsed.config == "openrs3" and parsed.heartbeat_timeout > 0
    assert parsed.coordinator_address is None and parsed.num_processes is None  # SLURM says it
    port = re.search(r"JAX_COORDINATOR_PORT=\$\{JAX_COORDINATOR_PORT:-(\d+)\}", text).group(1)
    for k in range(nodes * per_node):  # what srun gives task k of the step
        env = {"SLURM_JOB_ID": "77", "SLURM_PROCID": str(k), "SLURM_NTASKS": str(nodes), "SLURM_LOCALID": "0",
               "SLURM_NODEID": str(k), "SLURM_STEP_NODELIST": f"gpu[{11:03d}-{10 + nodes:03d}]",
               "SLURM_STEP_TASKS_PER_NODE": f"1(x{nodes})", "JAX_COORDINATOR_PORT": port}
        assert dist.resolve(env) == dist.ProcessSpec(f"gpu011:{port}", nodes, k, None, "SLURM")


def test_jobset_manifest_runs_one_process_per_pod():
    doc = yaml.safe_load((DOCS / "multihost" / "jobset.yaml").read_text())
    assert doc["apiVersion"].startswith("jobset.x-k8s.io/") and doc["kind"] == "JobSet"
    [rjob] = doc["spec"]["replicatedJobs"]
    job = rjob["template"]["spec"]
    assert rjob.get("replicas", 1) == 1 and job["completionMode"] == "Indexed"
    [container] = job["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    n = int(env["JAX_NUM_PROCESSES"])
    assert job["parallelism"] == job["completions"] == n and job["backoffLimit"] == 0
    host, port = env["JAX_COORDINATOR_ADDRESS"].rsplit(":", 1)
    name = doc["metadata"]["name"]
    assert host == f"{name}-{rjob['name']}-0-0.{name}"  # JobSet's stable name of pod 0
    assert int(port) in [p["containerPort"] for p in container["ports"]]
    assert container["command"][:2] == ["bash", "-c"]
    script = container["command"][2]
    run = shlex.split(script.split("exec ", 1)[1].replace("$RESUME", ""))
    gpus = int(container["resources"]["limits"]["nvidia.com/gpu"])
    parsed = check_train_command(train_args(run), n * gpus)
    assert parsed.output_dir.startswith(container["volumeMounts"][0]["mountPath"])
    for k in range(n):  # Kubernetes gives pod k JOB_COMPLETION_INDEX=k
        assert dist.resolve({**env, "JOB_COMPLETION_INDEX": str(k)}) == dist.ProcessSpec(
            env["JAX_COORDINATOR_ADDRESS"], n, k, None, "environment")


@pytest.mark.parametrize("devices,expect", [(["--gpus", "2"], ["CUDA_VISIBLE_DEVICES=0,1", "CUDA_VISIBLE_DEVICES=2,3"]),
                                            (["--cpu-devices", "4"], ["XLA_FLAGS=--xla_force_host_platform_device_count=4"] * 2)])
def test_local_launcher_gives_each_process_its_devices_and_id(devices, expect):
    out = subprocess.run(["bash", str(DOCS / "multihost" / "local.sh"), "2", *devices, "--", "python", "-m",
                          "openrs_jax.train", "--config", "quickstart"], capture_output=True, text=True, check=True,
                         env={**os.environ, "DRY_RUN": "1", "PORT": "4321"}).stdout.splitlines()
    assert len(out) == 2
    for k, (line, env) in enumerate(zip(out, expect)):
        assert line.startswith(env + " ")
        parsed = build_parser().parse_args(train_args(shlex.split(line)))
        assert (parsed.coordinator_address, parsed.num_processes, parsed.process_id) == ("127.0.0.1:4321", 2, k)


def test_the_pages_link_each_other():
    assert "docs/MULTIHOST.md" in (REPO / "README.md").read_text()
    page = (DOCS / "MULTIHOST.md").read_text()
    for target in re.findall(r"\]\((multihost/[^)]+)\)", page):
        assert (DOCS / target).is_file(), target
    assert {"multihost/openrs3.sbatch", "multihost/jobset.yaml", "multihost/local.sh"} <= set(
        re.findall(r"\]\((multihost/[^)]+)\)", page))
