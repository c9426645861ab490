"""Each trial's crash record, `tuner/trial_<id>/runs.json`: who ran it, where, and how each run ended.

A run entry is written when a process starts a trial and closed ("completed", "failed",
"interrupted") when it stops; an entry never closed is a process that died mid-trial (killed, or
out of host memory). Keras Tuner hands an unfinished trial back on every resume, so a trial that
keeps killing its process would stop the study forever: after CRASHED_RUNS_LIMIT deaths it is
failed instead. Ctrl-C closes its entry ("interrupted"), so it never counts as a death.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from . import backend
from .files import read_json, write_json_atomic

# A single kill -9 still resumes the trial; the second death in it fails it.
CRASHED_RUNS_LIMIT = 2


class RunLog:
    """This process's view of the runs.json files under `tuner_dir`, as tuner `tuner_id`."""

    def __init__(self, tuner_dir: Path, tuner_id: str):
        self.tuner_dir, self.tuner_id = Path(tuner_dir), tuner_id
        self.running: str | None = None  # the trial this process is running now

    def _path(self, trial_id: str) -> Path:
        return self.tuner_dir / f"trial_{trial_id}" / "runs.json"

    def runs(self, trial_id: str) -> list[dict]:
        """One entry per run of the trial (a trial re-run after a crash has two)."""
        path = self._path(trial_id)
        return read_json(path) if path.is_file() else []

    def runner(self, trial_id: str) -> str:
        """The tuner id that ran the trial last, or "?"."""
        runs = self.runs(trial_id)
        return runs[-1]["tuner_id"] if runs else "?"

    def start(self, trial_id: str) -> str | None:
        """Record that this process starts the trial. Returns why it must fail without running
        (its process died too often), or None."""
        earlier = self.runs(trial_id)
        died = sum("ended" not in run for run in earlier)
        self.running = trial_id
        self._path(trial_id).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self._path(trial_id), earlier + [{
            "tuner_id": self.tuner_id, "host": socket.gethostname(), "pid": os.getpid(), "backend": backend.name(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }])
        if died >= CRASHED_RUNS_LIMIT:
            return (f"its process died in {died} earlier runs of it (killed, or out of host memory?); failed so "
                    f"the study goes on")
        return None

    def end(self, trial_id: str, how: str, reason: str | None = None) -> None:
        """Close this process's open entry for the trial: it did not die mid-run. `reason`: why it
        failed, for the chief (Keras Tuner's gRPC trial carries no message: `failure_message`)."""
        runs = self.runs(trial_id)
        for run in reversed(runs):
            if run.get("pid") == os.getpid() and run.get("tuner_id") == self.tuner_id and "ended" not in run:
                run["ended"] = how
                if reason:
                    run["reason"] = reason
                write_json_atomic(self._path(trial_id), runs)
                break
        if self.running == trial_id:
            self.running = None

    def interrupted(self) -> None:
        """The user stopped the search (Ctrl-C): the running trial did not kill its process."""
        if self.running:
            self.end(self.running, "interrupted")


def failure_message(trial_dir: str | Path) -> str | None:
    """Why the trial's last run failed, as the process that ran it recorded it in runs.json."""
    try:
        runs = read_json(Path(trial_dir) / "runs.json")
        return runs[-1].get("reason") if runs else None
    except (OSError, ValueError, AttributeError, IndexError, KeyError, TypeError):
        return None
