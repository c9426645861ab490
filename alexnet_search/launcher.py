"""A chief and N workers on this machine (`--workers N`): where each runs (a GPU, or a share of
the cores), their output prefixed and logged under `results/<study>/logs/`, Ctrl-C stopping them
all, and a worker that dies started again under the same id, which makes Keras Tuner hand it back
its unfinished trial (the oracle gives a tuner id its ongoing trial before any new one).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from .cluster import ORACLE_IP, ORACLE_PORT, TUNER_ID, check_ports
from .devices import Gpu, visible_gpus
from .errors import UserError

# A worker that dies within STARTUP_S of starting, MAX_RESTARTS times in a row, is a broken setup
# (bad environment, unreachable chief): the study stops. A later death is restarted every time:
# its trial comes back to it, and runlog.CRASHED_RUNS_LIMIT fails a trial that keeps killing it.
MAX_RESTARTS = 3
STARTUP_S = 120.0


# What `--workers auto` allows each worker. GPU memory: an estimate for paper.toml's trials
# (AlexNet at 128x128, batch 128: 24 M parameters with their momentum and gradients, the
# activations of a batch, XLA's workspace), not yet measured on a GPU. Host cores: a worker's
# input pipeline and its XLA compiles run there, and a GPU search spends most of its time
# compiling a new model, not training it (docs/experiments/2026-11-27-gpu-h200-paper-scale-jax.md).
WORKER_GPU_GIB = 8.0
WORKER_CORES = 2
# Without a GPU a worker is a core: one process training on one thread wastes less than one
# process spreading this small network over several, which also beats two processes each on
# every core (docs/experiments/2026-11-29-study-seed-1-avx512-fresh-clone.md). Host memory bounds
# them: a TensorFlow worker holds about half of this through cpu.toml's search.
WORKER_HOST_GIB = 2.0
# The thread pools a CPU worker is held to: TensorFlow's two, and OpenMP's (PyTorch, BLAS).
# JAX's XLA:CPU pool has no such switch (JAX trains this network 3x slower on CPU anyway).
CPU_THREADS = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")


def host_memory_gib() -> float:
    """This machine's physical memory (0 where the OS will not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (ValueError, OSError, AttributeError):
        return 0.0


def cpu_threads(cores: int, workers: int) -> int:
    """Each CPU worker's share of the cores, in threads (never 0)."""
    return max(1, cores // workers)


def auto_workers(gpus: list[Gpu], cores: int, host_gib: float | None = None) -> tuple[int, str]:
    """How many workers `--workers auto` starts here, and why, in words."""
    if not gpus:
        host_gib = host_memory_gib() if host_gib is None else host_gib
        by_memory = max(1, int(host_gib // WORKER_HOST_GIB)) if host_gib else cores
        n = max(1, min(cores, by_memory))
        return n, (f"no GPU visible: {n} worker(s) of {cpu_threads(cores, n)} thread(s) each ({cores} core(s), "
                   f"{host_gib:.0f} GiB of memory at about {WORKER_HOST_GIB:g} GiB a worker)")
    memory = sum(g.memory_gib for g in gpus)
    by_memory = max(1, sum(int(g.memory_gib // WORKER_GPU_GIB) for g in gpus))
    by_cores = max(1, (cores - 1) // WORKER_CORES)  # a core for the chief and the launcher
    n = min(by_memory, by_cores)
    return n, (f"{n} worker(s): {len(gpus)} GPU(s) with {memory:.0f} GiB hold {by_memory} at about "
               f"{WORKER_GPU_GIB:g} GiB each, {cores} cores feed {by_cores} at {WORKER_CORES} each")


def placement(workers: int, gpus: list[Gpu], environ: dict | None = None,
              cores: int | None = None) -> list[dict[str, str]]:
    """Each worker's GPU (round robin) and, where several share one, its share of that GPU's
    memory, set the backend's way; without a GPU, its share of the `cores` (default: this
    process's) as thread-pool sizes. What the user already set in `environ` is left alone.

    JAX takes 75% of a GPU per process by default, so a second JAX worker on it would run out
    of memory: each gets an equal part of 90% (XLA_PYTHON_CLIENT_MEM_FRACTION). TensorFlow takes
    it all unless memory growth is on (TF_FORCE_GPU_ALLOW_GROWTH). PyTorch allocates as it goes.
    On a CPU each backend would size its pools to every core, and N workers would contend for them.
    """
    environ = os.environ if environ is None else environ
    if not gpus:
        threads = str(cpu_threads(cores or len(os.sched_getaffinity(0)), workers))
        return [{key: threads for key in CPU_THREADS if key not in environ} for _ in range(workers)]
    sharing = -(-workers // len(gpus))  # workers on the busiest GPU
    envs = []
    for i in range(workers):
        env = {"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)].index}
        if sharing > 1:
            for key, value in (("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / sharing:.3f}"),
                               ("TF_FORCE_GPU_ALLOW_GROWTH", "true")):
                if key not in environ:
                    env[key] = value
        envs.append(env)
    return envs


def _die_with_parent() -> None:
    """In a child, before it runs: have the kernel send it SIGTERM when the launcher dies, however
    it dies (kill -9 included). An orphaned chief would go on serving its port and split a later
    study's workers between two oracles. Linux's prctl(PR_SET_PDEATHSIG); elsewhere a no-op."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass



LAUNCHER_PID = "ALEXNET_SEARCH_LAUNCHER_PID"
# How long a chief or worker may take to stop cleanly once its launcher is gone.
ORPHAN_GRACE_S = 10.0


def leave_with_launcher() -> None:
    """In a chief or worker that `launch_local` started: exit at most ORPHAN_GRACE_S after the
    launcher dies.

    The kernel's SIGTERM (`_die_with_parent`) stops the run as Ctrl-C does, but Python runs a signal
    handler only between bytecodes: a worker blocked in a gRPC call to the chief that died with the
    launcher (reporting its finished trial, say) waited there for good. A thread watching the parent
    bounds that; the run it cuts short is recorded as a crash, as after kill -9.
    """
    launcher = int(os.environ.get(LAUNCHER_PID) or 0)
    if not launcher:
        return

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(1)
        time.sleep(ORPHAN_GRACE_S)
        os._exit(128 + signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="leave-with-launcher").start()



class _Log:
    """A child's log file that survives its folder being emptied and gives up on a full disk.

    With --overwrite the chief empties the study, logs/ included, after the launcher opened the
    logs: a log found unlinked is opened again under its name, so it is not written to a deleted
    file. A failed open or write is said once and the log is dropped.
    """

    def __init__(self, path: Path, name: str, say):
        self.path, self.name, self.say, self.file = path, name, say, None
        self._open()

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # O_NOFOLLOW: a link planted under the log's name must not make it append to another file.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            self.file = os.fdopen(fd, "a", encoding="utf-8", errors="replace")
        except OSError as exc:
            self._give_up(exc)

    def _give_up(self, exc: OSError) -> None:
        self.close()
        self.file = False  # given up: no more tries, no more lines about it
        self.say(f"[launcher] {self.name}'s log {self.path} cannot be written ({exc.strerror or exc}); "
                 f"its output goes to this console only\n")

    def write(self, line: str) -> None:
        if not self.file:
            return
        try:
            if os.fstat(self.file.fileno()).st_nlink == 0:
                self.file.close()
                self._open()
                if not self.file:
                    return
            self.file.write(line)
            self.file.flush()
        except OSError as exc:
            self._give_up(exc)

    def close(self) -> None:
        if self.file:
            try:
                self.file.close()
            except OSError:
                pass


class _Process:
    def __init__(self, name: str, tuner_id: str, argv: list[str], env: dict, log: Path, out: TextIO, lock):
        self.name, self.tuner_id, self.argv, self.env, self.log, self.out, self.lock = (
            name, tuner_id, argv, env, log, out, lock)
        self.restarts = 0  # deaths in a row within STARTUP_S of starting
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.started = time.monotonic()
        # errors="replace": one non-UTF-8 byte from a library must not end the pump (below).
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, errors="replace", bufsize=1, start_new_session=True,
                                     preexec_fn=_die_with_parent)
        self.pump = threading.Thread(target=self._pump, args=(self.proc,), daemon=True)
        self.pump.start()

    def _pump(self, proc: subprocess.Popen) -> None:
        """Copy the child's output to its log and the console until it exits.

        Whatever fails here, the pipe keeps being drained: a child whose ~64 KiB pipe fills up
        blocks on its next print, and the study would hang without a word. A log that cannot be
        written (full disk) is given up with one line; the console carries on alone.
        """
        log = _Log(self.log, self.name, self._say)
        try:
            for line in proc.stdout:
                log.write(line)
                self._say(f"[{self.name}] {line}")
        finally:
            log.close()
            for _ in proc.stdout:  # only if the loop above broke: drain until the child exits
                pass

    def _say(self, text: str) -> None:
        with self.lock:
            try:
                print(text, end="", file=self.out, flush=True)
            except (OSError, ValueError):  # a closed or broken console (the user's `| head` ended)
                pass

    def signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass


def launch_local(child_args: list[str], workers: int | str, host: str, port: int, log_dir: Path,
                 out: TextIO = sys.stdout, poll_s: float = 0.5, command: str = "search") -> int:
    """Run a chief and `workers` workers ("auto": `auto_workers`) of `alexnet-search COMMAND
    CHILD_ARGS` here (search; retrain-best and baseline, whose seeds are the trials); return the
    exit status.

    Workers are spread over the GPUs (`placement`): with as many GPUs, one each, N small trials
    at once instead of one trial mirrored over all of them; with more workers than GPUs, several
    share one, so one's XLA compile runs on the host while another trains. The chief trains
    nothing and gets no GPU.
    """
    from .console import printer

    say = printer(out, "[launcher] ")
    gpus = visible_gpus()
    if workers == "auto":
        workers, why = auto_workers(gpus, len(os.sched_getaffinity(0)))
        say(f"--workers auto: {why}")
    if workers < 1:
        raise UserError(f"--workers must be >= 1 (got {workers})")
    check_ports(host, port)
    log_dir.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    base = {**os.environ, ORACLE_IP: host, ORACLE_PORT: str(port), "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "alexnet_search", command, *child_args]

    def env_for(tuner_id: str, placed: dict) -> dict:
        return {**base, TUNER_ID: tuner_id, LAUNCHER_PID: str(os.getpid()), **placed}

    places = placement(workers, gpus)
    threads = places[0].get("TF_NUM_INTRAOP_THREADS") if not gpus else None
    say(f"chief on {host}:{port} and {workers} worker(s)"
        + (f" on {len(gpus)} GPU(s)" if gpus else f" of {threads} thread(s) each" if threads else "")
        + f"; logs in {log_dir}/")
    chief = _Process("chief", "chief", argv, env_for("chief", {"CUDA_VISIBLE_DEVICES": ""} if gpus else {}),
                     log_dir / "chief.log", out, lock)
    # Workers must not see --overwrite: only the chief may reset the study.
    worker_argv = [a for a in argv if a != "--overwrite"]
    pool = [
        _Process(f"worker {i}", f"tuner{i}", worker_argv, env_for(f"tuner{i}", placed), log_dir / f"tuner{i}.log",
                 out, lock)
        for i, placed in enumerate(places, start=1)
    ]
    # SIGTERM (a scheduler's preemption, `kill`) stops the study as Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while True:
            time.sleep(poll_s)
            if (rc := _supervise(chief, pool, say)) is not None:
                return rc
    except KeyboardInterrupt:
        # Workers first, while the chief still answers them: a worker ending its trial reports it.
        say("interrupted: stopping the workers, then the chief; rerun the same command to resume")
        for group in (pool, [chief]):
            for p in group:
                p.signal(signal.SIGINT)
            deadline = time.monotonic() + 15
            for p in group:
                while p.proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.2)
                p.signal(signal.SIGKILL)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _supervise(chief: _Process, pool: list[_Process], say) -> int | None:
    """One look at the chief and its workers: the exit status once the study is over (the chief
    returned, or a worker keeps dying as it starts), else None; a worker that died is restarted."""
    rc = chief.proc.poll()
    if rc is not None:
        for w in pool:  # all trials are done once the chief returns; a worker still up is idle
            w.signal(signal.SIGTERM)
        if rc != 0:
            say(f"the chief exited with status {rc}; workers stopped. Rerun the same command to resume.")
        return rc
    for w in pool:
        wrc = w.proc.poll()
        if wrc is None or wrc == 0:
            continue
        if time.monotonic() - w.started > STARTUP_S:
            w.restarts = 0
        if w.restarts >= MAX_RESTARTS:
            say(f"{w.name} died {w.restarts + 1} times in a row soon after starting (last status {wrc}); "
                f"stopping the study. See {w.log}; rerun the same command to resume.")
            for p in (chief, *pool):
                p.signal(signal.SIGTERM)
            return 1
        w.restarts += 1
        say(f"{w.name} died (status {wrc}); restarting it as {w.tuner_id}: Keras Tuner gives it back "
            f"its unfinished trial, which runs again from scratch")
        w.start()
    return None
