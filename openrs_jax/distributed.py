"""JAX's multi-controller runtime for our tools: several processes (one per host, or per GPU),
one global mesh, the same program everywhere (layer L1).

    resolve(env, ...)  -> ProcessSpec | None   who this process is (pure: tests feed it environments)
    initialize(spec)                           jax.distributed.initialize + the failure watchdog
    process_index() · process_count() · is_primary() · share(n)
    allgather_objects(tag, obj) · broadcast_object(tag, obj) · any_process(tag, flag)
    to_host(array)                             a process-spanning jax.Array as one host array
    fail(line, code)                           this process failed: stop them all, now

Nothing happens at import time; the CLIs (`train`, `evaluate`) call `resolve` and `initialize`
before JAX starts its backend.

Who a process is. Per field, the first source that has it wins:
  1. the CLI flags `--coordinator-address HOST:PORT --num-processes N --process-id I`;
  2. `JAX_COORDINATOR_ADDRESS` (which JAX reads itself), `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`;
  3. the launcher's variables:
     - SLURM (`srun`): SLURM_PROCID, SLURM_STEP_NUM_TASKS (else SLURM_NTASKS), the first host
       of SLURM_STEP_NODELIST; only inside a job step (SLURM_STEP_NODELIST set), as JAX does.
     - Open MPI (`mpirun`): OMPI_COMM_WORLD_RANK / _SIZE; the launcher's host from
       OMPI_MCA_orte_hnp_uri (Open MPI <= 4). Open MPI 5 (PRRTE) exports no address all ranks
       share, and JAX 0.10/0.11 then detect nothing: pass `-x JAX_COORDINATOR_ADDRESS=host0:port`.
     - MPICH / Intel MPI (hydra): PMI_RANK / PMI_SIZE (JAX detects neither); the coordinator
       as for Open MPI 5.
     - Kubernetes Indexed Job / JobSet: JOB_COMPLETION_INDEX is the process id; the manifest
       sets JAX_NUM_PROCESSES and JAX_COORDINATOR_ADDRESS (pod 0's stable DNS name). JAX's own
       Kubernetes detection needs the `kubernetes` package and pod-reading RBAC; this does not.
  The port, when a launcher gives only the host: JAX_COORDINATOR_PORT, else derived from the
  job id (SLURM, Open MPI) like JAX does, else 8476. One process (no launcher, or N = 1) runs
  without the distributed runtime.

Local devices. A process uses every device it can see. When several processes share a host
and the launcher did not bind devices (CUDA_VISIBLE_DEVICES naming one device, or
JAX_LOCAL_DEVICE_IDS), process r of that host takes local device r (JAX's rule for SLURM and
Open MPI; it gives one device per process even with one process per host, which we do not).

Joining. Processes other than 0 first wait (up to the join timeout) for the coordinator's port
to accept connections, and fail with a one-line `DistributedError` naming it when it never
does: XLA's own client aborts the process on that timeout with a message blaming "another
task". Process 0 waits for every process to register; when one never comes, XLA aborts it
after the join timeout ("DEADLINE_EXCEEDED ... RegisterTask"), after our line saying whom it
waited for.

Failure. JAX's coordination service stops every process when one stops sending heartbeats
(`heartbeat_timeout_s`: killed, or its host is gone; XLA prints "The following tasks are
unhealthy (stopped sending heartbeats)" and aborts). A process that fails with a Python error
is alive and would leave the others waiting in a collective: `fail` (called by
openrs_jax/cli.py) publishes its error in the runtime's key-value store, and a watchdog thread
in every process polls for it (every `POLL_S`), prints `error: process k of N stopped the run:
<its error>` and exits with the same code, so no process hangs. Process 0 leaves last (it hosts
the coordination service, whose end aborts every process still attached).

Exchanges (`allgather_objects`, ...) go through the coordination service's key-value store,
not the devices: any thread may use them (the reward scorer does) without racing the device
collectives of the main thread. Values are pickled (between our own processes only). Calls
with the same `tag` must happen in the same order on every process.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import pickle
import re
import socket
import sys
import threading
import time
from typing import Any, Mapping, Sequence

import numpy as np

from openrs_jax import _compat

DEFAULT_PORT = 8476
POLL_S = 0.5
_ABORT_KEY = "openrs/abort"
_KV_CHUNK = 32 << 20  # bytes per key-value entry (a gRPC message each)
_WAIT_SLICE_MS = 10_000


class DistributedError(RuntimeError):
    """The distributed runtime could not start, or a process stopped the run."""


@dataclasses.dataclass(frozen=True)
class ProcessSpec:
    """One process's place in a multi-process run (`jax.distributed.initialize` arguments).
    `launcher` names where the values came from, for messages."""

    coordinator_address: str
    num_processes: int
    process_id: int
    local_device_ids: tuple[int, ...] | None = None
    launcher: str = "flags"

    def describe(self) -> str:
        return (f"process {self.process_id} of {self.num_processes} (coordinator {self.coordinator_address}, "
                f"from {self.launcher})")


# ---------------------------------------------------------------------------- who we are
def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list: "gpu[003-005,9],cpu1" -> "gpu003"."""
    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not m:
        raise DistributedError(f"cannot read the SLURM node list {nodelist!r}")
    prefix, ranges = m.group(1), m.group(2)
    if ranges is None:
        return prefix
    return prefix + re.split(r"[,-]", ranges, maxsplit=1)[0]


def slurm_tasks_on_node(tasks_per_node: str, node_id: int) -> int:
    """Tasks on node `node_id` from SLURM's compressed count list: "2(x3),1", 3 -> 1."""
    counts: list[int] = []
    for part in tasks_per_node.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if not m:
            raise DistributedError(f"cannot read SLURM's tasks per node {tasks_per_node!r}")
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    if not 0 <= node_id < len(counts):
        raise DistributedError(f"SLURM node id {node_id} outside the tasks per node list {tasks_per_node!r}")
    return counts[node_id]


def _ompi_launcher_host(uri: str) -> str | None:
    """The launcher's IP in OMPI_MCA_orte_hnp_uri ("1531576320.0;tcp://10.0.0.1,10.1.0.1:34911")."""
    m = re.search(r"tcp://(.+?)[,:]|tcp6://\[(.+?)[,\]]", uri)
    return None if m is None else next(g for g in m.groups() if g is not None)


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise DistributedError(f"{name}={env[name]!r} is not an integer") from None


@dataclasses.dataclass
class _Launcher:
    """What a launcher's environment says (None: it does not say)."""

    name: str
    process_id: int | None = None
    num_processes: int | None = None
    host: str | None = None  # the coordinator's host, when known
    port: int | None = None  # a job-specific port, when derivable
    local_rank: int | None = None
    local_size: int | None = None


def _detect_launcher(env: Mapping[str, str]) -> _Launcher | None:
    if "SLURM_PROCID" in env and "SLURM_STEP_NODELIST" in env:
        count = "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else "SLURM_NTASKS"
        local_size = None
        per_node = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
        if per_node and "SLURM_NODEID" in env:
            local_size = slurm_tasks_on_node(per_node, _int(env, "SLURM_NODEID"))
        port = None
        if "SLURM_JOB_ID" in env:  # JAX's choice: a port in the top 4,096, from the job id
            port = _int(env, "SLURM_JOB_ID") % 4096 + 65535 - 4096 + 1
        return _Launcher("SLURM", _int(env, "SLURM_PROCID"), _int(env, count) if count in env else None,
                         first_slurm_host(env["SLURM_STEP_NODELIST"]), port,
                         _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else None, local_size)
    if "OMPI_COMM_WORLD_RANK" in env:
        uri = env.get("OMPI_MCA_orte_hnp_uri")
        host = port = None
        if uri:
            host = _ompi_launcher_host(uri)
            job = re.match(r"(\d+)", uri)
            port = None if job is None else int(job.group(1)) // 4096 % 4096 + 65535 - 4096 + 1
        return _Launcher("Open MPI" if uri else "Open MPI 5", _int(env, "OMPI_COMM_WORLD_RANK"),
                         _int(env, "OMPI_COMM_WORLD_SIZE") if "OMPI_COMM_WORLD_SIZE" in env else None, host, port,
                         _int(env, "OMPI_COMM_WORLD_LOCAL_RANK") if "OMPI_COMM_WORLD_LOCAL_RANK" in env else None,
                         _int(env, "OMPI_COMM_WORLD_LOCAL_SIZE") if "OMPI_COMM_WORLD_LOCAL_SIZE" in env else None)
    if "PMI_RANK" in env and "PMI_SIZE" in env:
        return _Launcher("MPICH/Intel MPI", _int(env, "PMI_RANK"), _int(env, "PMI_SIZE"),
                         local_rank=_int(env, "MPI_LOCALRANKID") if "MPI_LOCALRANKID" in env else None,
                         local_size=_int(env, "MPI_LOCALNRANKS") if "MPI_LOCALNRANKS" in env else None)
    if "JOB_COMPLETION_INDEX" in env:
        return _Launcher("Kubernetes indexed job", _int(env, "JOB_COMPLETION_INDEX"))
    return None


def _bound_to_one_device(env: Mapping[str, str]) -> bool:
    if env.get("JAX_LOCAL_DEVICE_IDS"):
        return True
    for name in ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"):
        value = env.get(name)
        if value is not None and len([d for d in value.split(",") if d.strip()]) == 1:
            return True
    return False


def resolve(
    env: Mapping[str, str] | None = None,
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> ProcessSpec | None:
    """This process's `ProcessSpec` from the flags and the environment (see the module
    docstring), or None for a single-process run. Raises DistributedError when the sources
    say "several processes" but leave a value out, or contradict themselves."""
    env = os.environ if env is None else env
    launcher = _detect_launcher(env)
    explicit = {"JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "JAX_COORDINATOR_ADDRESS"} & set(env)
    if any(v is not None for v in (coordinator_address, num_processes, process_id)):
        source = "flags"
    elif explicit or launcher is None:
        source = "environment"
    else:
        source = launcher.name
    if num_processes is None and "JAX_NUM_PROCESSES" in env:
        num_processes = _int(env, "JAX_NUM_PROCESSES")
    if num_processes is None and launcher is not None:
        num_processes = launcher.num_processes
    if num_processes is None or num_processes == 1:
        if process_id not in (None, 0):
            raise DistributedError(f"--process-id {process_id} without --num-processes (or JAX_NUM_PROCESSES)")
        return None
    if num_processes < 1:
        raise DistributedError(f"the number of processes must be >= 1, got {num_processes}")
    if process_id is None and "JAX_PROCESS_ID" in env:
        process_id = _int(env, "JAX_PROCESS_ID")
    if process_id is None and launcher is not None:
        process_id = launcher.process_id
    if process_id is None:
        raise DistributedError(f"{num_processes} processes, but which one is this? Pass --process-id "
                               "(or set JAX_PROCESS_ID)")
    if not 0 <= process_id < num_processes:
        raise DistributedError(f"process id {process_id} outside 0..{num_processes - 1}")
    address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
    if not address and launcher is not None and launcher.host:
        address = f"{launcher.host}:{env.get('JAX_COORDINATOR_PORT') or launcher.port or DEFAULT_PORT}"
    if not address:
        where = f" ({launcher.name} does not export one)" if launcher is not None else ""
        raise DistributedError(f"{num_processes} processes need a coordinator address{where}: pass "
                               "--coordinator-address HOST:PORT (or set JAX_COORDINATOR_ADDRESS), the same on "
                               "every process, HOST being process 0's")
    if not re.search(r":\d+$", address):  # a bare host (or [IPv6]): the default port
        address = f"{address}:{env.get('JAX_COORDINATOR_PORT') or DEFAULT_PORT}"
    local = None
    if (launcher is not None and launcher.local_size and launcher.local_size > 1 and launcher.local_rank is not None
            and not _bound_to_one_device(env)):
        local = (launcher.local_rank,)
    return ProcessSpec(address, int(num_processes), int(process_id), local, source)


# ---------------------------------------------------------------------------- start
_STATE: dict[str, Any] = {"spec": None, "watchdog": None, "stop": None, "counters": {}, "aborting": False}
_LOCK = threading.Lock()


def initialize(spec: ProcessSpec, *, init_timeout_s: int = 300, heartbeat_timeout_s: int = 100,
               log=lambda msg: None) -> None:
    """Joins the run described by `spec` (before anything starts JAX's backend), then starts
    the watchdog that stops this process when another one aborts. Raises DistributedError
    with one line when the coordinator does not answer within `init_timeout_s`."""
    import jax

    start = time.monotonic()
    if spec.process_id == 0:
        log(f"[openrs] {spec.describe()}: waiting up to {init_timeout_s} s for all {spec.num_processes} processes")
    else:
        wait_for_port(spec.coordinator_address, init_timeout_s,
                      what=f"{spec.describe()}: the coordinator (process 0)")
    init_timeout_s = max(1, int(init_timeout_s - (time.monotonic() - start)))
    if _compat.cpu_collectives_unset():
        # Cross-process collectives on CPU devices need an implementation; gloo ships with jaxlib.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=spec.coordinator_address, num_processes=spec.num_processes,
            process_id=spec.process_id,
            local_device_ids=list(spec.local_device_ids) if spec.local_device_ids is not None else None,
            cluster_detection_method="deactivate", initialization_timeout=int(init_timeout_s),
            heartbeat_timeout_seconds=int(heartbeat_timeout_s),
        )
    except Exception as e:  # XLA's status text, reduced to its first line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DistributedError(
            f"{spec.describe()}: could not join the run within {init_timeout_s} s ({first}). Are all "
            f"{spec.num_processes} processes started, and is {spec.coordinator_address} process 0's host, "
            "reachable from here?"
        ) from e
    _STATE["spec"] = spec
    stop = threading.Event()
    watchdog = threading.Thread(target=_watch, args=(stop,), name="openrs-abort-watchdog", daemon=True)
    _STATE.update(stop=stop, watchdog=watchdog)
    watchdog.start()
    atexit.register(_stop_watchdog)  # before JAX's own shutdown (atexit runs newest first)
    log(f"[openrs] joined the distributed run: {spec.describe()}")


def split_address(address: str) -> tuple[str, int]:
    """("host", port) of "host:port" or "[v6]:port"."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def wait_for_port(address: str, timeout_s: float, *, what: str) -> None:
    """Returns once something accepts TCP connections at `address`; raises DistributedError
    naming `what` after `timeout_s`."""
    host, port = split_address(address)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(2.0, max(0.1, deadline - time.monotonic()))):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise DistributedError(f"{what} did not answer at {address} within {timeout_s:g} s ({e}); is it "
                                       "running, and is that its host and port?") from None
        time.sleep(0.25)


def is_initialized() -> bool:
    return _STATE["spec"] is not None


def _stop_watchdog() -> None:
    if _STATE["stop"] is not None:
        _STATE["stop"].set()
        _STATE["watchdog"].join(timeout=2 * POLL_S + 1)


def _published_abort(client) -> tuple[int, int, str] | None:
    """(process, exit code, message) of the abort published in this run, if any."""
    try:
        raw = client.key_value_try_get(_ABORT_KEY)
    except Exception:  # noqa: BLE001 — not set (or the coordinator is gone: XLA handles that)
        return None
    sender, code, message = raw.split("\t", 2)
    return int(sender), int(code), message


def _watch(stop: threading.Event) -> None:
    client = _compat.distributed_client()
    me = process_index()
    while not stop.wait(POLL_S):
        found = _published_abort(client)
        if found is None or found[0] == me or _STATE["aborting"]:
            continue
        _STATE["aborting"] = True
        sender, code, message = found
        _emit(f"error: process {sender} of {process_count()} stopped the run: {message}")
        _exit_after_abort(client, code)


def _emit_flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass


def _emit(line: str) -> None:
    _emit_flush()
    print(line, file=sys.stderr, flush=True)


def _exit_after_abort(client, code: int, ack_timeout_s: float = 10.0) -> None:
    """Leaves the run at once, except process 0: it hosts the coordination service, whose end
    makes XLA abort every process still connected (SIGABRT, a message blaming "another task"),
    so it waits until every other process has said it is leaving (or `ack_timeout_s`)."""
    me = process_index()
    try:
        client.key_value_set(f"{_ABORT_KEY}/ack/{me}", "1")
    except Exception:  # noqa: BLE001
        pass
    if me == 0:
        deadline = time.monotonic() + ack_timeout_s
        for p in range(1, process_count()):
            left_ms = int(1000 * (deadline - time.monotonic()))
            if left_ms <= 0:
                break
            try:
                client.blocking_key_value_get(f"{_ABORT_KEY}/ack/{p}", left_ms)
            except Exception:  # noqa: BLE001 — gone already (killed), or too slow: leave anyway
                pass
        time.sleep(2 * POLL_S)  # from their ack to their exit
    _emit_flush()
    os._exit(int(code))


def fail(line: str, code: int = 1) -> None:
    """This process failed with `line` (an `error: ...` line): prints it prefixed with
    `[process k of N]`, tells every other process (whose watchdog prints it and exits with
    `code`), and exits without JAX's shutdown barrier, which the others will not reach. When
    another process failed first (this error may be a consequence: a collective that lost its
    peer), its message is printed instead. Never returns; a no-op in a single-process run."""
    if not is_initialized():
        return
    _STATE["aborting"] = True
    client = _compat.distributed_client()
    me, n = process_index(), process_count()
    first = _published_abort(client)
    if first is not None and first[0] != me:
        sender, first_code, message = first
        _emit(f"error: process {sender} of {n} stopped the run: {message}")
        _exit_after_abort(client, first_code)
    _emit(f"[process {me} of {n}] {line}")
    try:
        client.key_value_set(_ABORT_KEY, f"{me}\t{int(code)}\t{line.removeprefix('error: ')}")
    except Exception:  # noqa: BLE001 — another process aborted a moment ago: its watchdog message is the cause
        pass
    _exit_after_abort(client, code)


# ---------------------------------------------------------------------------- who am I
def process_index() -> int:
    import jax

    return int(jax.process_index())


def process_count() -> int:
    import jax

    return int(jax.process_count())


def is_primary() -> bool:
    """Process 0: the one that writes logs, metrics, config and checkpoint manifests."""
    return process_index() == 0


def share(n: int, index: int | None = None, count: int | None = None) -> tuple[int, int]:
    """[lo, hi): the contiguous share of n items of process `index` (default: this one) of
    `count`; the first n % count processes take one more."""
    index = process_index() if index is None else index
    count = process_count() if count is None else count
    base, extra = divmod(n, count)
    lo = index * base + min(index, extra)
    return lo, lo + base + (1 if index < extra else 0)


# ---------------------------------------------------------------------------- exchanges
def _next_round(tag: str) -> int:
    with _LOCK:
        _STATE["counters"][tag] = round_ = _STATE["counters"].get(tag, 0) + 1
    return round_


def _put(client, key: str, data: bytes) -> None:
    chunks = [data[i : i + _KV_CHUNK] for i in range(0, len(data), _KV_CHUNK)] or [b""]
    for i, chunk in enumerate(chunks[1:], start=1):
        client.key_value_set_bytes(f"{key}/{i}", chunk)
    client.key_value_set_bytes(key, len(chunks).to_bytes(4, "little") + chunks[0])  # the header last


def _get(client, key: str) -> bytes:
    while True:  # in slices: the watchdog (another thread) ends the process if the run aborts
        try:
            head = client.blocking_key_value_get_bytes(key, _WAIT_SLICE_MS)
            break
        except Exception as e:
            if "DEADLINE_EXCEEDED" not in str(e):
                raise DistributedError(f"reading {key} from the coordination service failed: "
                                       f"{str(e).splitlines()[0]}") from e
    n = int.from_bytes(head[:4], "little")
    return head[4:] + b"".join(client.blocking_key_value_get_bytes(f"{key}/{i}", _WAIT_SLICE_MS) for i in range(1, n))


def _delete(client, key: str) -> None:
    try:
        client.key_value_delete(key)  # deletes the key and every key under it (the chunks)
    except Exception:  # noqa: BLE001 — a leftover key costs the coordinator a few bytes
        pass


def allgather_objects(tag: str, obj: Any) -> list[Any]:
    """[object of process 0, ..., of process N−1] on every process. One process: [obj].

    Round r of `tag` writes `openrs/x/<tag>/<r>/<process>`; a process deletes its round r−1
    key once it has read every key of round r (everyone has then finished round r−1)."""
    if process_count() == 1:
        return [obj]
    client = _compat.distributed_client()
    me, n, round_ = process_index(), process_count(), _next_round(tag)
    key = lambda r, p: f"openrs/x/{tag}/{r}/{p}"
    _put(client, key(round_, me), pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
    out = [obj if p == me else pickle.loads(_get(client, key(round_, p))) for p in range(n)]
    if round_ > 1:
        _delete(client, key(round_ - 1, me))
    return out


def broadcast_object(tag: str, obj: Any = None) -> Any:
    """Process 0's `obj` on every process (the others pass None)."""
    if process_count() == 1:
        return obj
    return allgather_objects(tag, obj if is_primary() else None)[0]


def any_process(tag: str, flag: bool) -> bool:
    """True on every process when `flag` is true on any."""
    return any(allgather_objects(tag, bool(flag)))


def first_set(tag: str, value: Any) -> Any:
    """The first non-None `value` in process order, on every process (None if none)."""
    return next((v for v in allgather_objects(tag, value) if v is not None), None)


# ---------------------------------------------------------------------------- arrays
def to_host(x: Any) -> np.ndarray:
    """A jax.Array as a numpy array on this host. Arrays whose shards live in other processes
    are gathered (a collective: every process must call it, in the same order)."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def tree_to_host(tree: Any) -> Any:
    """`to_host` on every leaf of a pytree (one collective for all that need one)."""
    import jax
    from jax.experimental import multihost_utils

    leaves, treedef = jax.tree.flatten(tree)
    remote = [i for i, x in enumerate(leaves) if not getattr(x, "is_fully_addressable", True)
              and not x.is_fully_replicated]
    out = [to_host(x) if i not in remote else None for i, x in enumerate(leaves)]
    if remote:
        gathered = multihost_utils.process_allgather([leaves[i] for i in remote], tiled=True)
        for i, g in zip(remote, gathered):
            out[i] = np.asarray(g)
    return jax.tree.unflatten(treedef, out)


def devices_by_process(devices: Sequence[Any]) -> list[list[Any]]:
    """`devices` grouped by the process that owns them (process order; order kept within)."""
    count = max(d.process_index for d in devices) + 1
    return [[d for d in devices if d.process_index == p] for p in range(count)]
