"""Child processes that stop as a whole: each started in its own process group (and session), stopped by
SIGTERM to every group, then SIGKILL to whatever is left after a grace period.

A child in its own group does not receive the terminal's Ctrl-C; the parent decides when and how the children
stop. What they start themselves (Dagster's gRPC servers, run workers, ``tail`` of compute logs) stays in their
group and stops with it; a descendant that left its group is found through ``psutil`` when installed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass

GRACE_S = 5.0
"""Seconds between SIGTERM and SIGKILL when stopping the children."""

KILL_WAIT_S = 1.0
"""Seconds the killed descendants get to disappear."""

POLL_S = 0.1


@dataclass(frozen=True)
class Child:
    """A started child: its name in messages and its process (the leader of its own process group)."""

    name: str
    process: subprocess.Popen


class Supervisor:
    """Starts children in their own process groups and stops them all (use as a context manager: leaving it
    stops every child, also on an exception)."""

    def __init__(self) -> None:
        self.children: list[Child] = []

    def __enter__(self) -> "Supervisor":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self, name: str, command: list[str], **popen) -> Child:
        """Start ``command`` as a new session (so a new process group led by the child)."""
        child = Child(name, subprocess.Popen(command, start_new_session=True, **popen))
        self.children.append(child)
        return child

    def exited(self) -> Child | None:
        """The first child that has exited, or None while all run."""
        return next((child for child in self.children if child.process.poll() is not None), None)

    def stop(self, grace_s: float = GRACE_S) -> None:
        """SIGTERM to every child's group, SIGKILL to what is left after ``grace_s`` (the groups and every
        descendant seen before), then reap the children and wait for the others to be gone. Returns within about
        ``grace_s`` + :data:`KILL_WAIT_S` s."""
        stragglers = descendants([child.process.pid for child in self.children])
        signal_groups(self.children, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and not all_gone(self.children, stragglers):
            time.sleep(POLL_S)
        signal_groups(self.children, signal.SIGKILL)
        for process in stragglers:
            kill_quietly(process)
        for child in self.children:
            child.process.wait()
        deadline = time.monotonic() + KILL_WAIT_S  # SIGKILL acts when the process next runs
        while time.monotonic() < deadline and any(alive(p) for p in stragglers):
            time.sleep(POLL_S / 10)


def signal_groups(children: list[Child], number: int) -> None:
    """Send signal ``number`` to the process group of each child (a group whose leader exited still exists
    while members remain; one with no member left is skipped)."""
    for child in children:
        try:
            os.killpg(child.process.pid, number)
        except (ProcessLookupError, PermissionError):
            pass


def all_gone(children: list[Child], others: list) -> bool:
    """Whether every child has exited and every other process (psutil) has exited or is a zombie."""
    return all(child.process.poll() is not None for child in children) and not any(alive(p) for p in others)


def descendants(pids: list[int]) -> list:
    """``psutil.Process`` of every descendant of ``pids`` (children first); [] without psutil."""
    try:
        import psutil
    except ImportError:
        return []
    found = []
    for pid in pids:
        try:
            found.extend(psutil.Process(pid).children(recursive=True))
        except psutil.Error:
            continue
    return found


def alive(process) -> bool:
    """Whether a ``psutil.Process`` still runs (a zombie has exited; a reused pid is another process)."""
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_quietly(process) -> None:
    """SIGKILL a ``psutil.Process`` unless it is gone (``kill`` checks that the pid was not reused)."""
    import psutil

    try:
        process.kill()
    except psutil.Error:
        pass
