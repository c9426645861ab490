"""Where trials run: Keras Tuner's chief/worker roles, a local launcher for them, several GPUs in
one trial, and the GPU speed options.

Scaling out uses Keras Tuner's own distributed tuning and nothing else: one chief process serves
the Hyperband oracle over gRPC and decides every trial; workers ask it for trials, train them and
report back. A process's role comes from Keras Tuner's environment variables:

    KERASTUNER_TUNER_ID      "chief" for the chief, any other unique id (tuner1, ...) for a worker
    KERASTUNER_ORACLE_IP     the chief's address (loopback by default: --oracle-host to change)
    KERASTUNER_ORACLE_PORT   the chief's port (the preset's [distributed] port, or --oracle-port)

All processes share `results/<study>/` (a shared filesystem across hosts). `launch_local` starts
a chief and N workers on this machine and supervises them: output prefixed per process and logged
under `results/<study>/logs/`, Ctrl-C stops them all, and a worker that dies is started again
under the same id, which makes Keras Tuner hand it back its unfinished trial (the oracle gives a
tuner id its ongoing trial before any new one).
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, NamedTuple, TextIO

from .errors import UserError

TUNER_ID, ORACLE_IP, ORACLE_PORT = "KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"
# A worker that dies within STARTUP_S of starting, MAX_RESTARTS times in a row, is a broken setup
# (bad environment, unreachable chief): the study stops. A later death is restarted every time:
# its trial comes back to it, and runlog.CRASHED_RUNS_LIMIT fails a trial that keeps killing it.
MAX_RESTARTS = 3
STARTUP_S = 120.0


def role() -> str:
    """'single', 'chief' or 'worker', from Keras Tuner's environment variables."""
    if TUNER_ID not in os.environ and ORACLE_IP not in os.environ:
        return "single"
    missing = [v for v in (TUNER_ID, ORACLE_IP, ORACLE_PORT) if not os.environ.get(v)]
    if missing:
        raise UserError(f"distributed tuning needs all of {TUNER_ID}, {ORACLE_IP} and {ORACLE_PORT}; "
                        f"{', '.join(missing)} missing (or use --chief / --worker ID)")
    return "chief" if "chief" in os.environ[TUNER_ID] else "worker"


def oracle_address(flag_host: str | None, flag_port: int | None, config) -> tuple[str, int]:
    """Where the chief serves: what the user typed, else Keras Tuner's variables, else the preset."""
    host = flag_host or os.environ.get(ORACLE_IP) or config["distributed"]["host"]
    port = flag_port or os.environ.get(ORACLE_PORT) or config["distributed"]["port"]
    try:
        port = int(port)
    except ValueError:
        raise UserError(f"{ORACLE_PORT}={port!r} is not a port number; set it to 1-65535") from None
    if not 1 <= port <= 65535:
        raise UserError(f"oracle port {port} is out of range; use 1-65535")
    return host, port


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def check_port(host: str, port: int) -> None:
    """UserError unless a chief could serve on host:port now.

    gRPC binds with SO_REUSEPORT, so a second chief would share a port that a first one (or an
    orphan) still serves, and the workers' calls would be split between two oracles. A plain bind
    here fails while anything listens there.
    """
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise UserError(f"--oracle-host {host}: cannot resolve it ({exc}); use an address of this machine") from None
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed chief's TIME_WAIT is no owner
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(f"port {port} on {host} is already in use (another study's chief, or another "
                                f"program); pass --oracle-port with a free port") from None
            raise UserError(f"cannot serve the oracle on {host}:{port} ({exc.strerror or exc}); --oracle-host "
                            f"must be an address of this machine") from None


def finalists_port(port: int) -> int:
    """Where the chief serves the finalists' oracle (`confirm`) once the search's is done: beside it."""
    return port + 1 if port < 65535 else port - 1


def check_ports(host: str, port: int) -> None:
    """`check_port` for both oracles a chief serves: the search's and the finalists'."""
    check_port(host, port)
    try:
        check_port(host, finalists_port(port))
    except UserError as exc:
        raise UserError(f"{exc} (a chief serves the finalists' oracle on --oracle-port + 1)") from None


def serve_oracle(oracle) -> None:
    """Be Keras Tuner's chief for `oracle` (its `oracle_chief.start_server`) until every trial is
    done, then close the port.

    Keras Tuner's own leaves its server to the garbage collector when it returns; a worker that
    connected in that moment would wait on an oracle going away, for Keras Tuner's 60-minute client
    timeout. The servicer and the stop condition are Keras Tuner's.
    """
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1), options=SERVER_OPTIONS)
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    server.add_insecure_port(f"{os.environ[ORACLE_IP]}:{os.environ[ORACLE_PORT]}")
    server.start()
    try:
        while not (servicer.stop_triggered and oracle_chief.exit_chief(oracle)):
            time.sleep(1)
            for tuner_id, trial_id in oracle.expire_leases():
                print(f"no word from worker {tuner_id} for {oracle.lease_s:g} s ([distributed] lease_s): "
                      + (f"its trial {trial_id} goes to the next worker that asks; " if trial_id else "")
                      + "no longer waiting for it", flush=True)
    finally:
        server.stop(grace=None).wait()


# A worker's connection to its chief. A partition (a link down, a switch restarted) leaves the TCP
# connection half-open: a call made on it waits for TCP's retransmissions, 50 s or more after a 30 s
# partition, and a trial that ended inside it lost its lease ([distributed] lease_s) before its
# result got through; the call itself then sat out Keras Tuner's 60-minute timeout. Pings every
# KEEPALIVE_S, each given KEEPALIVE_S to be answered, close such a connection within seconds (the
# call fails UNAVAILABLE and `PatientStub` makes it again), and a new connection is tried at least
# every KEEPALIVE_S, so a worker is heard again within seconds of the partition's end.
KEEPALIVE_S = 2
WORKER_CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", KEEPALIVE_S * 1000),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_S * 1000),
    ("grpc.keepalive_permit_without_calls", 1),  # between calls too: a trial's end must not find it dead
    ("grpc.http2.max_pings_without_data", 0),  # gRPC stops pinging after 2 unanswered-by-data pings otherwise
    # Any ping in flight stands in for the keepalive one (gRPC sends its own, to size windows), and
    # it waits a minute for its answer by default.
    ("grpc.http2.ping_timeout_ms", KEEPALIVE_S * 1000),
    ("grpc.max_reconnect_backoff_ms", KEEPALIVE_S * 1000),
)
# The chief accepts those pings. By default a gRPC server takes one ping without data per 5 minutes
# and closes a connection that sends more (GOAWAY "too_many_pings").
SERVER_OPTIONS = (
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", KEEPALIVE_S * 1000 // 2),
    ("grpc.http2.max_ping_strikes", 0),  # 0: never close a connection for its pings
)


def worker_stub():
    """Keras Tuner's Oracle stub for a worker (what its OracleClient builds), on a channel that
    notices a dead connection (WORKER_CHANNEL_OPTIONS): to the chief at KERASTUNER_ORACLE_IP and
    KERASTUNER_ORACLE_PORT as they are now."""
    import grpc
    from keras_tuner.src import protos

    channel = grpc.insecure_channel(f"{os.environ[ORACLE_IP]}:{os.environ[ORACLE_PORT]}",
                                    options=WORKER_CHANNEL_OPTIONS)
    return protos.get_service_grpc().OracleStub(channel)


class PatientStub:
    """A worker's Keras Tuner gRPC stub whose calls outlast a chief's restart.

    Keras Tuner's calls wait for a chief that is not there yet (wait_for_ready), but one in
    flight when the chief dies fails at once (UNAVAILABLE), and Keras Tuner counts that against
    the trial the worker was finishing: a trial trained to the end was recorded as failed. Each
    call is tried again until the chief answers, for up to `give_up_s` (Keras Tuner's own 60
    minutes). A call the chief answered before dying is harmless to repeat: it hands the same
    trial back to the same worker, and ignores a second end of one trial.
    """

    def __init__(self, stub, give_up_s: float = 3600.0, pause_s: float = 1.0):
        self._stub, self._give_up_s, self._pause_s = stub, give_up_s, pause_s

    def __getattr__(self, name):
        import grpc

        rpc = getattr(self._stub, name)

        def call(request, **kwargs):
            deadline = time.monotonic() + self._give_up_s
            while True:
                try:
                    return rpc(request, **kwargs)
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                        raise
                time.sleep(self._pause_s)

        return call


def paced(create_trial: Callable, pause_s: float = 1.0) -> Callable:
    """A worker's `oracle.create_trial` that waits `pause_s` after an IDLE answer (the chief has
    nothing to hand out until a running trial ends: a Hyperband round, a confirmation deciding its
    leader). Keras Tuner's search loop asks again at once: about 1,600 calls a second, a whole
    core between the worker and the chief, on a machine whose other cores train."""

    def create(tuner_id):
        trial = create_trial(tuner_id)
        if trial.status == "IDLE":
            time.sleep(pause_s)
        return trial

    return create


def worker_phase(host: str, port: int, wait_s: float = 600.0, poll_s: float = 1.0,
                 meanwhile: Callable[[], None] | None = None) -> str:
    """Where a worker that starts now joins its chief: "search", or "finalists" when the chief
    already serves the finalists' oracle (a worker restarted after the search ended). Waits up to
    `wait_s` for a chief that is not serving yet (started after its workers), saying so at once,
    and calls `meanwhile` (Keras' import: seconds) once while it waits."""
    deadline, said = time.monotonic() + wait_s, False
    while True:
        if _listening(host, port):
            return "search"
        if _listening(host, finalists_port(port)):
            return "finalists"
        if not said:
            print(f"waiting up to {wait_s:.0f} s for the chief at {host}:{port} ...", flush=True)
            said = True
        if meanwhile is not None:
            meanwhile, work = None, meanwhile
            work()
            continue  # the chief may have come up meanwhile
        if time.monotonic() > deadline:
            raise UserError(f"no chief serves {host}:{port} (waited {wait_s:.0f} s); start the chief "
                            f"(make search WORKERS=N, or --chief), then its workers")
        time.sleep(poll_s)


def await_finalists(host: str, port: int, wait_s: float = 600.0, poll_s: float = 1.0) -> None:
    """After a worker's search ends: wait for its chief to serve the finalists' oracle, for as
    long as it still serves the search (other workers' last trials; Keras Tuner tells a worker
    the search is over as soon as nothing is left to hand out), then up to `wait_s`. A chief that
    stopped instead (failures in a row, Ctrl-C) never serves it; without this bound the worker
    would wait for Keras Tuner's 60-minute client timeout."""
    deadline = time.monotonic() + wait_s
    while not _listening(host, finalists_port(port)):
        if _listening(host, port):
            deadline = time.monotonic() + wait_s
        elif time.monotonic() > deadline:
            raise UserError(f"the chief at {host} ended the search but serves no finalists' oracle on port "
                            f"{finalists_port(port)} (waited {wait_s:.0f} s): it stopped; its output says why")
        time.sleep(poll_s)


def _listening(host: str, port: int) -> bool:
    """Whether a gRPC server answers at host:port. Its HTTP/2 handshake, not a TCP accept: the
    local end of an SSH tunnel accepts every connection whether or not a chief serves behind it."""
    import grpc

    channel = grpc.insecure_channel(f"{host}:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=2)
        return True
    except grpc.FutureTimeoutError:
        return False
    finally:
        channel.close()


def set_role(chief: bool, worker: str | None, host: str, port: int) -> None:
    """Set Keras Tuner's variables for --chief / --worker ID (before any tuner is built); the
    address given here wins over any inherited from the environment."""
    if chief and worker:
        raise UserError("--chief and --worker are exclusive: a process has one role")
    if worker is not None and ("chief" in worker or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", worker)):
        # Keras Tuner names a file after it (<study>/tuner/<id>.json): no paths, no 'chief'.
        raise UserError(f"--worker {worker!r}: a worker id is 1-64 letters, digits, '_' or '-', and must not "
                        f"contain 'chief'")
    if chief or worker is not None:
        os.environ[TUNER_ID] = "chief" if chief else (worker if not worker.isdigit() else f"tuner{worker}")
    if chief or worker is not None or TUNER_ID in os.environ:
        os.environ[ORACLE_IP] = host
        os.environ[ORACLE_PORT] = str(port)


def gpu_count() -> int:
    from . import backend

    return backend.gpu_count()


def strategy():
    """MirroredStrategy over every visible GPU when there are several on TensorFlow, else None.

    On JAX several devices train one model through Keras' distribution API instead, which
    applies process-wide (`keras.distribution.DataParallel`, set here); None is returned there
    too, as the model needs no scope. JAX's devices are its GPUs where it has any, else its CPU
    devices: one, unless XLA_FLAGS=--xla_force_host_platform_device_count=N asks for N (how the
    several-device path is tested without GPUs). PyTorch trains on one GPU.
    """
    import keras

    if keras.backend.backend() == "jax":
        import jax

        if jax.device_count() > 1:
            keras.distribution.set_distribution(keras.distribution.DataParallel())
        return None
    if gpu_count() < 2 or keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    return tf.distribute.MirroredStrategy()


def replicas(strategy_) -> int:
    """Devices one training step is split over (the batch is scaled by it)."""
    if strategy_ is not None:
        return strategy_.num_replicas_in_sync
    import keras

    dist = keras.distribution.distribution() if keras.backend.backend() == "jax" else None
    return int(dist.device_mesh.devices.size) if dist is not None else 1


def precision_and_xla_options(precision: str, jit_compile: bool, has_gpu: bool,
                  backend: str = "tensorflow") -> tuple[str, bool, str | None]:
    """The precision and XLA settings to use here, and a note when the preset's were changed.

    Mixed precision and XLA pay on GPUs; on a CPU float16 has no fast kernels and XLA compiled
    this model slower than TensorFlow's default kernels (measured on 2 AVX2 cores), so both are
    switched off where no GPU is visible. On JAX, XLA is always on: compiling is JAX's only fast
    path, and without it Keras runs every layer op by op.
    """
    notes = []
    if not has_gpu and (precision != "float32" or (jit_compile and backend != "jax")):
        notes.append(f"no GPU: running in float32{' without XLA' if backend != 'jax' else ''} (the preset asks "
                     f"for {precision}{', jit_compile' if jit_compile else ''}, which only pay on a GPU)")
        precision, jit_compile = "float32", False
    if backend == "jax" and not jit_compile:
        notes.append("JAX compiles every model with XLA (the preset's jit_compile = false applies to TensorFlow)")
        jit_compile = True
    return precision, jit_compile, "; ".join(notes) or None


def precision_and_xla(config) -> tuple[str, bool, str | None]:
    """`precision_and_xla_options` for a preset on this machine and backend: what its runs train with."""
    from . import backend

    m = config["model"]
    return precision_and_xla_options(m["precision"], m["jit_compile"], gpu_count() > 0, backend.name())


class Gpu(NamedTuple):
    index: str  # as CUDA_VISIBLE_DEVICES names it
    memory_gib: float


def visible_gpus() -> list[Gpu]:
    """The GPUs nvidia-smi lists, without importing a backend in the launcher."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.splitlines():
        index, _, mib = line.partition(",")
        try:
            gpus.append(Gpu(index.strip(), float(mib) / 1024))
        except ValueError:  # "[N/A]" and the like: a GPU nvidia-smi cannot size
            gpus.append(Gpu(index.strip(), 0.0))
    return gpus


# What `--workers auto` allows each worker. GPU memory: an estimate for paper.toml's trials
# (AlexNet at 128x128, batch 128: 24 M parameters with their momentum and gradients, the
# activations of a batch, XLA's workspace), not yet measured on a GPU. Host cores: a worker's
# input pipeline and its XLA compiles run there, and a GPU search spends most of its time
# compiling (README, Measured: 7-11 s a new model against 0.5 s an epoch).
WORKER_GPU_GIB = 8.0
WORKER_CORES = 2
# Without a GPU a worker is a core: one process training on one thread wastes less than one
# process spreading this small network over several. On 2 AVX-512 cores, cpu.toml's recipe: two
# one-thread workers trained 1.4x the images/s of one process on both cores (12.6 s an epoch
# each against 8.9 s), and two processes each on both cores only 1.14x (README, Measured). Host
# memory bounds them: a TensorFlow worker held about 1.0 GB through cpu.toml's search.
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
            self.file = open(self.path, "a", encoding="utf-8", errors="replace")
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
