"""cluster.py: roles from Keras Tuner's variables, addresses and ports, a worker's connection to its chief,
and real chiefs with workers end to end."""

import contextlib
import json
import os
import re
import socket
import time

import pytest

from alexnet_search import cluster
from alexnet_search.errors import UserError

from conftest import REPO, free_port, run_cli, trial_records, trial_runners

KT_VARS = (cluster.TUNER_ID, cluster.ORACLE_IP, cluster.ORACLE_PORT)


@pytest.fixture
def clean_env():
    """No Keras Tuner role variables, before and after: a leaked one turns later tests' tuners
    into workers waiting for a chief that is not there."""
    saved = {var: os.environ.pop(var, None) for var in KT_VARS}
    yield
    for var, value in saved.items():
        os.environ.pop(var, None)
        if value is not None:
            os.environ[var] = value


def test_roles_come_from_keras_tuners_variables(clean_env):
    assert cluster.role() == "single"
    cluster.set_role(chief=False, worker="2", host="127.0.0.1", port=8123)
    assert os.environ[cluster.TUNER_ID] == "tuner2" and os.environ[cluster.ORACLE_PORT] == "8123"
    assert cluster.role() == "worker"
    os.environ[cluster.TUNER_ID] = "chief"
    assert cluster.role() == "chief"
    del os.environ[cluster.ORACLE_PORT]
    with pytest.raises(UserError, match="KERASTUNER_ORACLE_PORT missing"):
        cluster.role()


def test_role_flags_are_checked(clean_env):
    with pytest.raises(UserError, match="exclusive"):
        cluster.set_role(chief=True, worker="1", host="h", port=1)
    with pytest.raises(UserError, match="must not contain 'chief'"):
        cluster.set_role(chief=False, worker="chief2", host="h", port=1)
    with pytest.raises(UserError, match="letters, digits"):  # Keras Tuner writes tuner/<id>.json
        cluster.set_role(chief=False, worker="../../x", host="h", port=1)
    cluster.set_role(chief=False, worker=None, host="h", port=1)
    assert cluster.role() == "single" and cluster.ORACLE_IP not in os.environ





@pytest.mark.slow
@pytest.mark.backends
def test_a_chief_and_two_workers_complete_the_study(tmp_path, cifar_dir, tiny_confirmed_config):
    # One finalist beside the paper's recipe, 1 seed each as cpu.toml: 2 runs cross the finalists'
    # oracle side by side, then the leader's second and third seeds side by side, and 2 more if it
    # falls behind the other's one.
    tiny_confirmed_config.write_text(tiny_confirmed_config.read_text().replace("finalists = 2", "finalists = 1")
                                     .replace("seeds = 2", "seeds = 1"))
    result = run_cli("search", "--config", tiny_confirmed_config, "--data-dir", cifar_dir, "--results-dir", tmp_path / "results",
                     "--workers", 2, "--oracle-port", free_port(), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-4000:]
    study = tmp_path / "results" / "tiny"
    trials = trial_records(study)
    assert len(trials) == 5  # what the single-process study of the same preset runs
    assert all(t["status"] == "COMPLETED" for t in trials.values())
    assert {r for runs in trial_runners(study).values() for r in runs} == {"tuner1", "tuner2"}
    out = result.stdout
    assert "[chief] serving the oracle on 127.0.0.1" in out and "[worker 1] --- trial" in out
    assert "[chief] trial 0000 completed (tuner" in out and "left" in out
    assert (study / "logs" / "chief.log").is_file() and (study / "logs" / "tuner2.log").is_file()
    summary = json.loads((study / "search_summary.json").read_text())
    assert summary["finished"] and summary["trials_completed"] == 5
    # Then the finalists: the chief serves their oracle beside the search's, the same workers train them.
    finalists = trial_records(study, "finalists")
    assert len(finalists) in (4, 5, 6) and all(t["status"] == "COMPLETED" for t in finalists.values())  # and the paper's
    assert {r for runs in trial_runners(study, "finalists").values() for r in runs} <= {"tuner1", "tuner2"}
    assert "[chief] finalist 1 seed 1001 completed (tuner" in out and "[worker 2] --- " in out
    # A worker counts the preset's plan: 1 finalist and the recipe x 1 seed, and the leader's 2 more.
    assert re.search(r"\[worker \d\] --- \S+ \S+ seed 1001 \(run [12]/4; ", out), out[-3000:]
    assert "[chief] baseline paper seed 1001 completed (tuner" in out
    confirmed = json.loads((study / "finalists.json").read_text())
    assert confirmed["finished"] and len(confirmed["finalists"][0]["runs"]) == 3  # the adopted one ran 3 seeds
    assert "an extra seed, racing for the lead" in out
    assert "Running Trial" not in out  # Keras Tuner's own per-trial tables: the chief's lines say it
    adopted = json.loads((study / "best_hyperparameters.json").read_text())
    assert adopted["trial_id"] == confirmed["finalists"][0]["trial_id"]


@pytest.mark.slow
def test_retrain_seeds_train_side_by_side_on_workers_and_the_chief_exports_them(tmp_path, cifar_dir, tiny_config):
    """retrain-best --workers 2: each seed a trial of the chief's oracle (Keras Tuner's engine, as the
    search's), trained by the workers; the chief evaluates nothing and exports the first (cpu.toml
    retrains on train+val: no seed validated better than another)."""
    chosen = tmp_path / "chosen.json"
    chosen.write_text(json.dumps({"dropout": 0.3, "lr": 0.02}))
    result = run_cli("retrain-best", "--config", tiny_config, "--study", "side", "--from", chosen, "--seeds", 2,
                     "--data-dir", cifar_dir, "--results-dir", tmp_path / "results", "--workers", 2,
                     "--oracle-port", free_port(), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-4000:]
    study, out = tmp_path / "results" / "side", result.stdout
    runs = trial_records(study, "runs/retrain-best")
    assert len(runs) == 2 and all(t["status"] == "COMPLETED" for t in runs.values())
    assert {r for ran in trial_runners(study, "runs/retrain-best").values() for r in ran} <= {"tuner1", "tuner2"}
    assert "[chief] serving 2 seeds on 127.0.0.1" in out and "[chief] retrain-best seed 2 completed (tuner" in out
    assert "] --- retrain-best 1/2 (seed 1)" in out and "[chief] exported to" in out
    metrics = json.loads((study / "best" / "metrics.json").read_text())
    assert metrics["seeds"] == [1, 2] and metrics["exported_seed"] == 1 and metrics["exports_verified_on_images"]
    assert json.loads((study / "best" / "hyperparameters.json").read_text())["dropout"] == 0.3
    assert (study / "logs" / "tuner2.log").is_file()


@pytest.mark.slow
def test_failures_in_a_row_stop_a_distributed_study_in_one_line_with_their_reason(tmp_path, cifar_dir, tiny_config):
    """Keras Tuner raised inside the chief's gRPC handler: the worker got a traceback and was
    restarted into the same failure, and the reason never crossed the wire."""
    diverging = tiny_config.read_text().replace("factor = 2", "factor = 2\nmax_consecutive_failed_trials = 2")
    tiny_config.write_text(diverging + '\n[space.lr]\ntype = "float"\nmin = 1e3\nmax = 1e4\ndefault = 1e3\n')
    result = run_cli("search", "--config", tiny_config, "--data-dir", cifar_dir, "--results-dir", tmp_path / "results",
                     "--workers", 1, "--oracle-port", free_port(), cwd=tmp_path)
    out = result.stdout
    assert result.returncode == 2, out[-4000:]
    # NaN in float32; in bfloat16 (cpu.toml's, on CPUs with it) a finite loss far past the guard.
    assert re.search(r"\[chief\] error: 2 trials in a row failed \(search.max_consecutive_failed_trials\), the last "
                     r"with: training loss (became non-finite|diverged)", out)
    assert "[launcher] the chief exited with status 2" in out and "died" not in out and "Traceback" not in out
    assert out.count("[chief] trial ") >= 2 and "no reason recorded" not in out
    failed = [t for t in trial_records(tmp_path / "results" / "tiny").values() if t["status"] == "FAILED"]
    assert len(failed) >= 2 and all(re.match("training loss (became non-finite|diverged)", t["message"]) for t in failed)


def test_what_the_user_typed_wins_over_an_inherited_oracle_address(clean_env):
    from alexnet_search.config import load_config

    config = load_config(REPO / "tuning" / "cpu.toml")
    os.environ[cluster.ORACLE_IP], os.environ[cluster.ORACLE_PORT] = "10.9.9.9", "9001"
    assert cluster.oracle_address("127.0.0.1", 8123, config) == ("127.0.0.1", 8123)
    assert cluster.oracle_address(None, None, config) == ("10.9.9.9", 9001)  # Keras Tuner's variables next
    cluster.set_role(chief=True, worker=None, host="127.0.0.1", port=8123)
    assert os.environ[cluster.ORACLE_IP] == "127.0.0.1" and os.environ[cluster.ORACLE_PORT] == "8123"
    for var in KT_VARS:
        os.environ.pop(var, None)
    assert cluster.oracle_address(None, None, config) == ("127.0.0.1", 8000)  # the preset last
    os.environ[cluster.ORACLE_PORT] = "http"
    with pytest.raises(UserError, match="KERASTUNER_ORACLE_PORT='http' is not a port number"):
        cluster.oracle_address(None, None, config)
    assert cluster.is_loopback("127.0.0.1") and cluster.is_loopback("localhost")
    assert not cluster.is_loopback("10.9.9.9") and not cluster.is_loopback("0.0.0.0")


def test_a_port_something_already_serves_is_refused(clean_env):
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as gRPC binds: a second bind would share it
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UserError, match=f"port {port} on 127.0.0.1 is already in use"):
            cluster.check_port("127.0.0.1", port)
    cluster.check_port("127.0.0.1", port)  # free again
    with pytest.raises(UserError, match="must be an address of this machine"):
        cluster.check_port("192.0.2.1", free_port())  # TEST-NET: never this machine's


def _one_line_exit_2(result, expected):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0], lines[0]


@pytest.mark.slow
def test_bad_ports_are_one_line_and_write_nothing(tmp_path, cifar_dir, tiny_config):
    results = tmp_path / "results"
    base = ["search", "--config", tiny_config, "--data-dir", cifar_dir, "--results-dir", results]
    _one_line_exit_2(run_cli(*base, "--chief", "--oracle-port", 99999, cwd=tmp_path), "99999 is not a port number")
    _one_line_exit_2(run_cli(*base, "--workers", -1, cwd=tmp_path), "--workers: must be from 1 to 256")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        _one_line_exit_2(run_cli(*base, "--chief", "--oracle-port", port, cwd=tmp_path), "already in use")
        _one_line_exit_2(run_cli(*base, "--workers", 2, "--oracle-port", port, cwd=tmp_path), "already in use")
    exposed = run_cli(*base, "--chief", "--oracle-host", "192.0.2.1", "--oracle-port", free_port(), cwd=tmp_path)
    warning, error = exposed.stderr.strip().splitlines()
    assert warning.startswith("warning: serving Keras Tuner's oracle on 192.0.2.1") and "no authentication" in warning
    assert error.startswith("error: cannot serve the oracle on 192.0.2.1") and exposed.returncode == 2
    assert not results.exists()


@contextlib.contextmanager
def _serving(port: int):
    """A gRPC server on 127.0.0.1:`port`: what a worker's check of its chief needs to see."""
    from concurrent import futures

    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(1))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        yield
    finally:
        server.stop(None)


def test_a_starting_worker_joins_whichever_oracle_its_chief_serves():
    """A worker started (or restarted) after the search ended must not wait on the search's
    closed port: the chief then serves the finalists' oracle on the next one."""
    port = free_port()
    while port + 1 > 65535 or not _port_free(port + 1):
        port = free_port()
    with pytest.raises(UserError, match=f"no chief serves 127.0.0.1:{port} \\(waited 0 s\\)"):
        cluster.worker_phase("127.0.0.1", port, wait_s=0.2, poll_s=0.05)
    # The local end of an SSH tunnel accepts a connection whether or not a chief serves behind it.
    with socket.socket() as tunnel_end, pytest.raises(UserError, match="no chief serves"):
        tunnel_end.bind(("127.0.0.1", port))
        tunnel_end.listen()
        cluster.worker_phase("127.0.0.1", port, wait_s=0.2, poll_s=0.05)
    for served, phase in ((port, "search"), (cluster.finalists_port(port), "finalists")):
        with _serving(served):
            assert cluster.worker_phase("127.0.0.1", port, wait_s=1) == phase
    # A worker started before its chief imports Keras while it waits: once, whatever the wait.
    calls = []
    with pytest.raises(UserError, match="no chief serves"):
        cluster.worker_phase("127.0.0.1", port, wait_s=0.3, poll_s=0.05, meanwhile=lambda: calls.append(1))
    assert calls == [1]
    with _serving(port):  # a chief already there: nothing to do meanwhile
        assert cluster.worker_phase("127.0.0.1", port, wait_s=1, meanwhile=lambda: calls.append(2)) == "search"
    assert calls == [1]
    # After the search: a chief that stopped (failures in a row) never serves the finalists.
    with pytest.raises(UserError, match=f"serves no finalists' oracle on port {port + 1} \\(waited 0 s\\): it stopped"):
        cluster.await_finalists("127.0.0.1", port, wait_s=0.2, poll_s=0.05)
    with _serving(cluster.finalists_port(port)):
        cluster.await_finalists("127.0.0.1", port, wait_s=1)
    # A chief still serving the search (other workers' last trials) is waited for, however long.
    import threading

    with _serving(port):
        waiter = threading.Thread(target=cluster.await_finalists, args=("127.0.0.1", port),
                                  kwargs={"wait_s": 0.2, "poll_s": 0.05}, daemon=True)
        waiter.start()
        time.sleep(3)
        assert waiter.is_alive()  # past wait_s, still waiting
        with _serving(cluster.finalists_port(port)):
            waiter.join(timeout=10)
    assert not waiter.is_alive()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_a_chief_needs_both_its_ports(clean_env):
    port = free_port()
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", cluster.finalists_port(port)))
        other.listen()
        with pytest.raises(UserError, match=f"port {port + 1} on 127.0.0.1 is already in use .*finalists' oracle"):
            cluster.check_ports("127.0.0.1", port)


def test_a_worker_with_another_preset_is_refused_in_one_line(tmp_path, cifar_dir, tiny_config):
    from alexnet_search.config import load_config
    from alexnet_search.study import prepare_search, study_for

    results = tmp_path / "results"
    prepare_search(study_for(results, "tiny"), load_config(tiny_config), overwrite=False)  # the chief's part
    before = {p: p.read_bytes() for p in (results / "tiny").iterdir()}
    port = free_port()
    with _serving(port):  # the chief's port, served: the worker stops waiting and checks
        done = run_cli("search", "--config", tiny_config, "--seed", 2, "--data-dir", cifar_dir, "--results-dir",
                       results, "--study", "tiny", "--worker", "1", "--oracle-port", port, cwd=tmp_path)
    _one_line_exit_2(done, "differs from its chief's")
    assert "in study.seed; start workers with the chief's --config and --seed" in done.stderr
    assert {p: p.read_bytes() for p in (results / "tiny").iterdir()} == before  # nothing written


@pytest.mark.slow
def test_a_worker_refuses_the_trials_of_another_studys_chief_on_its_port(tmp_path, cifar_dir, tiny_config):
    """Same preset, same seed, same space: only the study's id (`Study.make_id`) tells the oracle of
    study b, answering on the port where a's chief should be, from a's own."""
    import subprocess
    import sys

    from alexnet_search.config import load_config
    from alexnet_search.study import prepare_search, study_for

    results, port = tmp_path / "results", free_port()
    a = study_for(results, "a")
    prepare_search(a, load_config(tiny_config), overwrite=False)  # a's chief's part
    a.make_id()
    env = {k: v for k, v in os.environ.items() if k not in (*KT_VARS, "CIFAR10_DIR")} | {"PYTHONPATH": str(REPO)}
    impostor = subprocess.Popen([sys.executable, "-m", "alexnet_search", "search", "--config", str(tiny_config),
                                 "--data-dir", str(cifar_dir), "--results-dir", str(results), "--study", "b",
                                 "--chief", "--oracle-port", str(port)], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not cluster._listening("127.0.0.1", port):
            assert impostor.poll() is None and time.monotonic() < deadline, "the second study's chief did not start"
            time.sleep(0.5)
        done = run_cli("search", "--config", tiny_config, "--data-dir", cifar_dir, "--results-dir", results,
                       "--study", "a", "--worker", "1", "--oracle-port", port, cwd=tmp_path)
    finally:
        impostor.kill()
        impostor.wait()
    _one_line_exit_2(done, "of another study")
    assert f"{a.root}'s is {a.read_id()!r}" in done.stderr
    assert not (a.root / "tensorboard").exists() and not list((a.root / "tuner").glob("trial_*"))


def test_a_workers_call_cut_by_a_dying_chief_is_made_again_when_it_is_back():
    import grpc

    class Cut(grpc.RpcError):
        def __init__(self, code):
            self._code = code

        def code(self):
            return self._code

    calls = []

    class Stub:
        def EndTrial(self, request, **kwargs):
            calls.append((request, kwargs))
            if len(calls) < 3:
                raise Cut(grpc.StatusCode.UNAVAILABLE)  # the chief died with the call in flight
            return "ended"

        def UpdateTrial(self, request, **kwargs):
            raise Cut(grpc.StatusCode.UNKNOWN)  # the chief refused the call: not a restart

    patient = cluster.PatientStub(Stub(), pause_s=0)
    assert patient.EndTrial("trial", wait_for_ready=True) == "ended"
    assert calls == [("trial", {"wait_for_ready": True})] * 3
    with pytest.raises(grpc.RpcError):
        patient.UpdateTrial("trial")
    calls.clear()
    with pytest.raises(grpc.RpcError):  # not forever: a chief that never returns ends the worker
        cluster.PatientStub(Stub(), give_up_s=0, pause_s=0).EndTrial("trial")
    assert len(calls) == 1


class _Partition:
    """A TCP relay to `port` that a test can partition: `cut()` drops every byte on the
    connections it relays, and keeps them open (both ends' TCP still acknowledges, as a link that
    went down and came back leaves a connection half-open), and refuses new ones until `mend()`.
    A connection cut once stays dead: the worst case, where only a new connection gets through."""

    def __init__(self, port: int):
        import threading

        self.target, self.generation, self.down = port, 0, False
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self):
        self.generation, self.down = self.generation + 1, True

    def mend(self):
        self.down = False

    def _accept(self):
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst, self.generation), daemon=True).start()

    def _pump(self, src, dst, generation):
        while True:
            try:
                data = src.recv(65536)
                if not data:
                    return
                if generation == self.generation:
                    dst.sendall(data)
            except OSError:
                return

    def close(self):
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.close()


@contextlib.contextmanager
def _echo_server(options):
    """A gRPC server on loopback with a unary Echo method, and its port."""
    from concurrent import futures

    import grpc

    handler = grpc.method_handlers_generic_handler("t.T", {"Echo": grpc.unary_unary_rpc_method_handler(lambda r, c: r)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler], options=options)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(grace=None).wait()


def test_a_call_on_a_connection_a_partition_left_half_open_goes_through_soon_after_the_partition():
    """A worker's call made during a partition, on the connection the partition cut, gets through
    within seconds of its end, on a new connection (keepalive pings notice the dead one): not after
    TCP's retransmissions or Keras Tuner's 60-minute timeout, when the chief's lease on the worker
    has long expired (test_hosts' partition, where a trial ended inside it)."""
    import grpc

    with _echo_server(cluster.SERVER_OPTIONS) as port:
        relay = _Partition(port)
        channel = grpc.insecure_channel(f"127.0.0.1:{relay.port}", options=cluster.WORKER_CHANNEL_OPTIONS)

        class Stub:
            Echo = channel.unary_unary("/t.T/Echo")

        worker = cluster.PatientStub(Stub(), pause_s=0.2)
        try:
            assert worker.Echo(b"before", wait_for_ready=True, timeout=30) == b"before"
            relay.cut()
            result = {}

            def end_trial():
                started = time.monotonic()
                try:
                    result["reply"] = worker.Echo(b"during", wait_for_ready=True, timeout=30)
                except grpc.RpcError as exc:
                    result["reply"] = exc.code()
                result["s"] = time.monotonic() - started

            import threading

            call = threading.Thread(target=end_trial)
            call.start()
            time.sleep(6)  # the partition: longer than a ping and its wait
            relay.mend()
            call.join(timeout=40)
            assert result["reply"] == b"during"
            assert result["s"] < 6 + 4 * cluster.KEEPALIVE_S, result  # seconds after the partition, not 30
        finally:
            channel.close()
            relay.close()


def test_the_chief_accepts_a_workers_keepalive_pings_while_it_trains():
    """Between calls (a worker trains for minutes between them) its pings are allowed: a gRPC
    server's default closes a connection pinging more than once per 5 minutes (too_many_pings),
    and each reconnection would be a call's wait."""
    import grpc

    with _echo_server(cluster.SERVER_OPTIONS) as port:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=cluster.WORKER_CHANNEL_OPTIONS)
        states = []
        channel.subscribe(states.append, try_to_connect=True)
        try:
            grpc.channel_ready_future(channel).result(timeout=10)
            time.sleep(5 * cluster.KEEPALIVE_S)  # idle: only pings on the connection
            assert channel.unary_unary("/t.T/Echo")(b"x", timeout=10) == b"x"
            ready = states.index(grpc.ChannelConnectivity.READY)
            assert states[ready:] == [grpc.ChannelConnectivity.READY], states  # never dropped
        finally:
            channel.close()


def test_a_worker_told_to_wait_asks_again_after_a_pause_not_at_once():
    answers = iter(["IDLE", "IDLE", "RUNNING"])
    asked = []

    class Trial:
        def __init__(self, status):
            self.status = status

    def create_trial(tuner_id):
        asked.append(time.monotonic())
        return Trial(next(answers))

    create = cluster.paced(create_trial, pause_s=0.2)
    statuses = [create("tuner1").status for _ in range(3)]
    returned = time.monotonic()
    assert statuses == ["IDLE", "IDLE", "RUNNING"]
    assert asked[1] - asked[0] >= 0.2 and asked[2] - asked[1] >= 0.2
    assert returned - asked[2] < 0.1  # a trial to run is run at once


def test_a_chief_holds_both_its_ports_from_its_start_so_no_other_study_takes_the_second(tmp_path, tiny_config):
    """The finalists' port was checked at the start and bound hours later, when the search ended: a
    second study started on it meanwhile (as the busy-port message suggested) passed its check,
    and the two chiefs' servers then shared it, splitting the workers between two oracles."""
    import subprocess
    import sys

    import grpc

    port = free_port()
    while not _port_free(cluster.finalists_port(port)):
        port = free_port()
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); from alexnet_search import cluster; "
            f"cluster.check_ports('127.0.0.1', {port}, hold=True); print('held', flush=True); import time; time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        second = run_cli("search", "--config", tiny_config, "--workers", 1, "--oracle-port", cluster.finalists_port(port),
                         "--results-dir", tmp_path / "results", cwd=tmp_path)
        _one_line_exit_2(second, f"port {cluster.finalists_port(port)} on 127.0.0.1 is already in use")
        assert not (tmp_path / "results").exists()
        with socket.socket() as other, pytest.raises(OSError):
            other.bind(("127.0.0.1", cluster.finalists_port(port)))  # nor any other program
    finally:
        holder.kill()
        holder.wait()
    # The chief's own server binds beside what it holds, and is the one that answers there.
    cluster.check_port("127.0.0.1", port, hold=True)
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    try:
        assert server.add_insecure_port(f"127.0.0.1:{port}") == port
        server.start()
        assert cluster._listening("127.0.0.1", port)
    finally:
        server.stop(grace=None)
        cluster._held.pop(("127.0.0.1", port)).close()


@pytest.mark.parametrize("problem", ["missing data", "corrupt batch", "another search", "busy"])
def test_what_one_process_refuses_in_a_line_the_launcher_refuses_the_same_way(tmp_path, cifar_dir, tiny_config, problem):
    """With --workers the chief and each worker printed the error, prefixed, then the launcher's
    own line, and a logs/ folder was left in a study that never started."""
    from alexnet_search import locks
    from alexnet_search.config import load_config
    from alexnet_search.study import prepare_search, study_for

    results, data = tmp_path / "results", cifar_dir
    expected = {"missing data": "does not exist", "corrupt batch": "is corrupt or truncated",
                "another search": "holds a study of a different search", "busy": "is busy: its search is running"}
    if problem == "missing data":
        data = tmp_path / "nowhere"
    elif problem == "corrupt batch":
        (cifar_dir / "data_batch_2").write_bytes((cifar_dir / "data_batch_2").read_bytes()[:1000])
    else:
        other = load_config(tiny_config).with_overrides({"study": {"seed": 7}})
        prepare_search(study_for(results, "tiny"), other if problem == "another search" else load_config(tiny_config),
                       overwrite=False)
    holding = locks.held(results / "tiny", "search") if problem == "busy" else contextlib.nullcontext()
    with holding:  # "busy": as another search of the study would
        before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
        result = run_cli("search", "--config", tiny_config, "--data-dir", data, "--results-dir", results,
                         "--workers", 1, "--oracle-port", free_port(), cwd=tmp_path)
        _one_line_exit_2(result, expected[problem])
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing created


def test_a_chief_restarted_on_the_port_its_predecessor_just_closed_starts():
    """The closed chief's connections sit in TIME_WAIT on its port for a minute: the port is free
    to serve again (gRPC binds with SO_REUSEADDR), and holding it must not refuse the restart."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server's end closes first: TIME_WAIT on the chief's port
        time.sleep(0.2)
        client.close()
    try:
        cluster.check_port("127.0.0.1", port, hold=True)
    finally:
        held = cluster._held.pop(("127.0.0.1", port), None)
        if held is not None:
            held.close()


@pytest.mark.parametrize("command, args, expected", [
    ("baseline", ["--name", "nosuch"], "no baseline named nosuch"),
    ("retrain-best", [], "no study at"),
])
def test_retrain_and_baseline_with_workers_refuse_in_one_line_before_starting_anything(tmp_path, cifar_dir, tiny_config,
                                                                                      command, args, expected):
    result = run_cli(command, "--config", tiny_config, "--data-dir", cifar_dir, "--results-dir", tmp_path / "results",
                     "--workers", 1, "--oracle-port", free_port(), *args, cwd=tmp_path)
    _one_line_exit_2(result, expected)
    assert not (tmp_path / "results").exists()
