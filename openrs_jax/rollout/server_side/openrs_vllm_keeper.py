"""The keeper: runs a vLLM server as its child and stops the whole process group when the
owner dies, when the server dies, or when told to stop (stdlib only; see __init__).

    python openrs_vllm_keeper.py --owner PID [--grace S] [--pdeathsig] -- python -m vllm.entrypoints.openai.api_server ...

`VLLMServer` starts the keeper in a new session, so the keeper leads a process group that the
API server, vLLM's EngineCore and its workers all join (vLLM does not start sessions of its
own). Without a keeper a trainer killed with -9 left the server holding its GPU share, and
when the API server died its EngineCore stayed.

The keeper stops the group (SIGTERM to every member, SIGKILL to those left after `--grace` s)
and exits when
  - the owner dies: with `--pdeathsig` (Linux), PR_SET_PDEATHSIG delivers SIGTERM at once;
    in any case a watchdog sees `getppid()` change within `POLL_S` (the owner passes
    `--pdeathsig` only from its main thread: the signal fires when the forking thread ends,
    not the process; and it is set here, after exec, because a `preexec_fn` is unsafe in a
    threaded owner such as the trainer);
  - the API server exits (its exit code becomes the keeper's);
  - it receives SIGTERM or SIGINT (the owner's `stop()`).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import time

POLL_S = 0.5
PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int = signal.SIGTERM) -> None:
    """prctl(PR_SET_PDEATHSIG, sig) for the calling process (Linux; a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group `pgid`, from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            members.append(int(entry))
    return members


def stop_group(grace: float, log) -> None:
    """SIGTERM to every other member of our group, SIGKILL to any left after `grace` s."""
    me, pgid = os.getpid(), os.getpgid(0)

    def others() -> list[int]:
        return [p for p in group_members(pgid) if p != me]

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        for pid in others():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while others() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not others():
            return
        log(f"{len(others())} process(es) still alive after {signal.Signals(sig).name}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="openrs_vllm_keeper")
    ap.add_argument("--owner", type=int, required=True, help="pid of the process the server belongs to")
    ap.add_argument("--grace", type=float, default=15.0, help="seconds between SIGTERM and SIGKILL")
    ap.add_argument("--pdeathsig", action="store_true", help="get SIGTERM when the owner dies (Linux)")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- the server's argv")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    def log(message: str) -> None:
        print(f"[openrs keeper {os.getpid()}] {message}", file=sys.stderr, flush=True)

    stop_reason: list[str] = []
    # Handled, not fatal: the keeper outlives the signals it forwards to its own group.
    signal.signal(signal.SIGTERM, lambda s, f: stop_reason.append(signal.Signals(s).name))
    signal.signal(signal.SIGINT, lambda s, f: stop_reason.append(signal.Signals(s).name))
    if args.pdeathsig:
        set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != args.owner:  # the owner died before we got here (or before prctl)
        log(f"owner {args.owner} is gone before the server started")
        return 1
    # The API server gets SIGTERM if the keeper itself dies (killed with -9); the keeper has no
    # threads, so a preexec_fn is safe here.
    server = subprocess.Popen(command, preexec_fn=set_parent_death_signal)
    code = None
    while code is None:
        code = server.poll()
        if code is not None:
            log(f"server exited with code {code}; stopping its process group")
        elif os.getppid() != args.owner:  # checked first: the parent-death signal is a SIGTERM too
            log(f"owner {args.owner} died; stopping the server's process group")
        elif stop_reason:
            log(f"{stop_reason[0]}: stopping the server's process group")
        else:
            time.sleep(POLL_S)
            continue
        break
    stop_group(args.grace, log)
    if code is None:
        code = server.wait()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
