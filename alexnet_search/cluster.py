"""Keras Tuner's chief and workers: a process's role, the chief's address and ports, the gRPC
connection a worker keeps to its chief, and a worker's wait for the phase its chief serves.

Scaling out uses Keras Tuner's own distributed tuning and nothing else: one chief process serves
the oracle over gRPC and decides every trial; workers ask it for trials, train them and report
back. A process's role comes from Keras Tuner's environment variables:

    KERASTUNER_TUNER_ID      "chief" for the chief, any other unique id (tuner1, ...) for a worker
    KERASTUNER_ORACLE_IP     the chief's address (loopback by default: --oracle-host to change)
    KERASTUNER_ORACLE_PORT   the chief's port (the preset's [distributed] port, or --oracle-port)

All processes share `results/<study>/` (a shared filesystem across hosts). `launcher` starts a
chief and its workers on one machine; `devices` says what each trains on.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
import time
from typing import Callable

from .errors import UserError

TUNER_ID, ORACLE_IP, ORACLE_PORT = "KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"


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


# The ports this process holds (`check_port(hold=True)`), by (host, port), until it exits.
_held: dict[tuple[str, int], socket.socket] = {}


def check_port(host: str, port: int, hold: bool = False) -> None:
    """UserError unless a chief could serve on host:port now; with `hold`, keep it for this process.

    gRPC binds with SO_REUSEPORT, so a second chief would share a port that a first one (or an
    orphan) still serves, and the workers' calls would be split between two oracles. A plain bind
    here fails while anything is bound there.

    A chief serves its finalists' oracle hours after this check, when the search ends: held, the
    port is bound by a socket that never listens, with SO_REUSEPORT alone. This process's gRPC
    server binds beside it (the same user, the same option) and is the only one that accepts;
    another study's chief checking the port, or any program binding it plainly, is refused.
    """
    if (host, port) in _held:
        return
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
    if hold:
        holder = socket.socket(family, socket.SOCK_STREAM)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            holder.bind(address)
        except OSError:
            # Nothing listens there (the probe bound it), but a chief that just closed it left its
            # connections in TIME_WAIT, which only a socket with SO_REUSEADDR may bind beside, and
            # such a holder would let another probe bind too. Restarting that chief must work: the
            # port is checked, not held, for the minute TIME_WAIT lasts.
            holder.close()
            return
        _held[(host, port)] = holder


def finalists_port(port: int) -> int:
    """Where the chief serves the finalists' oracle (`confirm`) once the search's is done: beside it."""
    return port + 1 if port < 65535 else port - 1


def check_ports(host: str, port: int, hold: bool = False) -> None:
    """`check_port` for both oracles a chief serves: the search's and the finalists'."""
    check_port(host, port, hold)
    try:
        check_port(host, finalists_port(port), hold)
    except UserError as exc:
        raise UserError(f"{exc} (a chief serves the finalists' oracle on --oracle-port + 1)") from None


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

