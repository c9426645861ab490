"""distribute.py: roles from Keras Tuner's variables, speed options, and a real chief with workers."""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from alexnet_search import distribute
from alexnet_search.errors import UserError

from conftest import REPO, run_cli

KT_VARS = (distribute.TUNER_ID, distribute.ORACLE_IP, distribute.ORACLE_PORT)


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
    assert distribute.role() == "single"
    distribute.set_role(chief=False, worker="2", host="127.0.0.1", port=8123)
    assert os.environ[distribute.TUNER_ID] == "tuner2" and os.environ[distribute.ORACLE_PORT] == "8123"
    assert distribute.role() == "worker"
    os.environ[distribute.TUNER_ID] = "chief"
    assert distribute.role() == "chief"
    del os.environ[distribute.ORACLE_PORT]
    with pytest.raises(UserError, match="KERASTUNER_ORACLE_PORT missing"):
        distribute.role()


def test_role_flags_are_checked(clean_env):
    with pytest.raises(UserError, match="exclusive"):
        distribute.set_role(chief=True, worker="1", host="h", port=1)
    with pytest.raises(UserError, match="must not contain 'chief'"):
        distribute.set_role(chief=False, worker="chief2", host="h", port=1)
    with pytest.raises(UserError, match="letters, digits"):  # Keras Tuner writes tuner/<id>.json
        distribute.set_role(chief=False, worker="../../x", host="h", port=1)
    distribute.set_role(chief=False, worker=None, host="h", port=1)
    assert distribute.role() == "single" and distribute.ORACLE_IP not in os.environ


def test_gpu_precision_and_xla_options_are_off_without_a_gpu():
    assert distribute.precision_and_xla_options("mixed_float16", True, has_gpu=True) == ("mixed_float16", True, None)
    precision, jit, note = distribute.precision_and_xla_options("mixed_bfloat16", True, has_gpu=False)
    assert (precision, jit) == ("float32", False) and "no GPU" in note
    assert distribute.precision_and_xla_options("float32", False, has_gpu=False) == ("float32", False, None)


def test_jax_always_compiles_with_xla_and_says_so():
    # Uncompiled JAX runs every layer op by op: the preset's jit_compile = false is TensorFlow's.
    precision, jit, note = distribute.precision_and_xla_options("float32", False, has_gpu=True, backend="jax")
    assert (precision, jit) == ("float32", True) and "JAX compiles every model" in note
    precision, jit, note = distribute.precision_and_xla_options("mixed_float16", False, has_gpu=False, backend="jax")
    assert (precision, jit) == ("float32", True) and "no GPU" in note
    assert distribute.precision_and_xla_options("float32", True, has_gpu=False, backend="jax") == ("float32", True, None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _trials(study, project="tuner"):
    return {p.parent.name: json.loads(p.read_text()) for p in sorted((study / project).glob("trial_*/trial.json"))}


def _runners(study, project="tuner"):
    return {p.parent.name: [r["tuner_id"] for r in json.loads(p.read_text())]
            for p in sorted((study / project).glob("trial_*/runs.json"))}


@pytest.mark.slow
@pytest.mark.backends
def test_a_chief_and_two_workers_complete_the_study(tmp_path, cifar_dir, tiny_confirmed_config):
    # One finalist beside the paper's recipe, 1 seed each as cpu.toml: 2 runs cross the finalists'
    # oracle side by side, then the leader's second and third seeds side by side, and 2 more if it
    # falls behind the other's one.
    tiny_confirmed_config.write_text(tiny_confirmed_config.read_text().replace("finalists = 2", "finalists = 1")
                                     .replace("seeds = 2", "seeds = 1"))
    result = run_cli("search", "--config", tiny_confirmed_config, "--data-dir", cifar_dir, "--results-dir", tmp_path / "results",
                     "--workers", 2, "--oracle-port", _free_port(), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-4000:]
    study = tmp_path / "results" / "tiny"
    trials = _trials(study)
    assert len(trials) == 5  # what the single-process study of the same preset runs
    assert all(t["status"] == "COMPLETED" for t in trials.values())
    assert {r for runs in _runners(study).values() for r in runs} == {"tuner1", "tuner2"}
    out = result.stdout
    assert "[chief] serving the oracle on 127.0.0.1" in out and "[worker 1] --- trial" in out
    assert "[chief] trial 0000 completed (tuner" in out and "left" in out
    assert (study / "logs" / "chief.log").is_file() and (study / "logs" / "tuner2.log").is_file()
    summary = json.loads((study / "search_summary.json").read_text())
    assert summary["finished"] and summary["trials_completed"] == 5
    # Then the finalists: the chief serves their oracle beside the search's, the same workers train them.
    finalists = _trials(study, "finalists")
    assert len(finalists) in (4, 5, 6) and all(t["status"] == "COMPLETED" for t in finalists.values())  # and the paper's
    assert {r for runs in _runners(study, "finalists").values() for r in runs} <= {"tuner1", "tuner2"}
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
    search's), trained by the workers; the chief evaluates nothing and exports the best-validating."""
    chosen = tmp_path / "chosen.json"
    chosen.write_text(json.dumps({"dropout": 0.3, "lr": 0.02}))
    result = run_cli("retrain-best", "--config", tiny_config, "--study", "side", "--from", chosen, "--seeds", 2,
                     "--data-dir", cifar_dir, "--results-dir", tmp_path / "results", "--workers", 2,
                     "--oracle-port", _free_port(), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-4000:]
    study, out = tmp_path / "results" / "side", result.stdout
    runs = _trials(study, "runs/retrain-best")
    assert len(runs) == 2 and all(t["status"] == "COMPLETED" for t in runs.values())
    assert {r for ran in _runners(study, "runs/retrain-best").values() for r in ran} <= {"tuner1", "tuner2"}
    assert "[chief] serving 2 seeds on 127.0.0.1" in out and "[chief] retrain-best seed 2 completed (tuner" in out
    assert "] --- retrain-best 1/2 (seed 1)" in out and "[chief] exported to" in out
    metrics = json.loads((study / "best" / "metrics.json").read_text())
    assert metrics["seeds"] == [1, 2] and metrics["exported_seed"] in (1, 2) and metrics["exports_verified_on_images"]
    assert json.loads((study / "best" / "hyperparameters.json").read_text())["dropout"] == 0.3
    assert (study / "logs" / "tuner2.log").is_file()


@pytest.mark.slow
def test_failures_in_a_row_stop_a_distributed_study_in_one_line_with_their_reason(tmp_path, cifar_dir, tiny_config):
    """Keras Tuner raised inside the chief's gRPC handler: the worker got a traceback and was
    restarted into the same failure, and the reason never crossed the wire."""
    diverging = tiny_config.read_text().replace("factor = 2", "factor = 2\nmax_consecutive_failed_trials = 2")
    tiny_config.write_text(diverging + '\n[space.lr]\ntype = "float"\nmin = 1e3\nmax = 1e4\ndefault = 1e3\n')
    result = run_cli("search", "--config", tiny_config, "--data-dir", cifar_dir, "--results-dir", tmp_path / "results",
                     "--workers", 1, "--oracle-port", _free_port(), cwd=tmp_path)
    out = result.stdout
    assert result.returncode == 2, out[-4000:]
    assert "[chief] error: 2 trials in a row failed (search.max_consecutive_failed_trials), the last with: " \
           "training loss became non-finite" in out
    assert "[launcher] the chief exited with status 2" in out and "died" not in out and "Traceback" not in out
    assert out.count("[chief] trial ") >= 2 and "no reason recorded" not in out
    failed = [t for t in _trials(tmp_path / "results" / "tiny").values() if t["status"] == "FAILED"]
    assert len(failed) >= 2 and all(t["message"].startswith("training loss became non-finite") for t in failed)


def test_what_the_user_typed_wins_over_an_inherited_oracle_address(clean_env):
    from alexnet_search.config import load_config

    config = load_config(REPO / "tuning" / "cpu.toml")
    os.environ[distribute.ORACLE_IP], os.environ[distribute.ORACLE_PORT] = "10.9.9.9", "9001"
    assert distribute.oracle_address("127.0.0.1", 8123, config) == ("127.0.0.1", 8123)
    assert distribute.oracle_address(None, None, config) == ("10.9.9.9", 9001)  # Keras Tuner's variables next
    distribute.set_role(chief=True, worker=None, host="127.0.0.1", port=8123)
    assert os.environ[distribute.ORACLE_IP] == "127.0.0.1" and os.environ[distribute.ORACLE_PORT] == "8123"
    for var in KT_VARS:
        os.environ.pop(var, None)
    assert distribute.oracle_address(None, None, config) == ("127.0.0.1", 8000)  # the preset last
    os.environ[distribute.ORACLE_PORT] = "http"
    with pytest.raises(UserError, match="KERASTUNER_ORACLE_PORT='http' is not a port number"):
        distribute.oracle_address(None, None, config)
    assert distribute.is_loopback("127.0.0.1") and distribute.is_loopback("localhost")
    assert not distribute.is_loopback("10.9.9.9") and not distribute.is_loopback("0.0.0.0")


def test_a_port_something_already_serves_is_refused(clean_env):
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as gRPC binds: a second bind would share it
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UserError, match=f"port {port} on 127.0.0.1 is already in use"):
            distribute.check_port("127.0.0.1", port)
    distribute.check_port("127.0.0.1", port)  # free again
    with pytest.raises(UserError, match="must be an address of this machine"):
        distribute.check_port("192.0.2.1", _free_port())  # TEST-NET: never this machine's


def _one_line_exit_2(result, expected):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0], lines[0]


@pytest.mark.slow
def test_bad_ports_are_one_line_and_write_nothing(tmp_path, cifar_dir, tiny_config):
    results = tmp_path / "results"
    base = ["search", "--config", tiny_config, "--data-dir", cifar_dir, "--results-dir", results]
    _one_line_exit_2(run_cli(*base, "--chief", "--oracle-port", 99999, cwd=tmp_path), "99999 is not a port number")
    _one_line_exit_2(run_cli(*base, "--workers", -1, cwd=tmp_path), "--workers: must be >= 1")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        _one_line_exit_2(run_cli(*base, "--chief", "--oracle-port", port, cwd=tmp_path), "already in use")
        _one_line_exit_2(run_cli(*base, "--workers", 2, "--oracle-port", port, cwd=tmp_path), "already in use")
    exposed = run_cli(*base, "--chief", "--oracle-host", "192.0.2.1", "--oracle-port", _free_port(), cwd=tmp_path)
    warning, error = exposed.stderr.strip().splitlines()
    assert warning.startswith("warning: serving Keras Tuner's oracle on 192.0.2.1") and "no authentication" in warning
    assert error.startswith("error: cannot serve the oracle on 192.0.2.1") and exposed.returncode == 2
    assert not results.exists()


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in os.listdir("/proc"):
        try:
            with open(f"/proc/{proc}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(proc))
        except (OSError, ValueError):
            continue
    return found


@pytest.mark.slow
def test_a_killed_launcher_takes_its_chief_and_workers_with_it_and_a_killed_worker_is_restarted(tmp_path, cifar_dir,
                                                                                                 tiny_config):
    """kill -9 of the launcher used to leave the chief serving its port for good. The study then
    resumes on the same port, where a worker killed mid-trial is restarted and its trial run
    again by it. One study for both faults (make test's budget)."""
    results = tmp_path / "results"
    study = results / "tiny"
    args = [sys.executable, "-m", "alexnet_search", "search", "--config", str(tiny_config), "--data-dir",
            str(cifar_dir), "--results-dir", str(results), "--workers", "2", "--oracle-port", str(_free_port())]
    env = {"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "PATH": os.environ["PATH"],
           **{k: v for k, v in os.environ.items() if k == "KERAS_BACKEND"}}
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "completed (tuner" in line:  # a trial finished: kill mid-study
            break
    proc.kill()
    proc.wait(timeout=30)
    # Each stops cleanly on the kernel's SIGTERM, or ORPHAN_GRACE_S later if it was blocked (a worker
    # reporting its trial to the chief that died too stayed blocked for good before the watchdog).
    for _ in range(int(distribute.ORPHAN_GRACE_S + 30) * 5):
        if not _processes_mentioning(str(results)):
            break
        time.sleep(0.2)
    assert not _processes_mentioning(str(results)), "a chief or worker outlived its launcher"

    # The same port again (a chief left serving it would refuse the new one or split its workers),
    # and worker 1's process killed as soon as it starts a trial.
    again = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed, lines = None, []
    for line in again.stdout:
        lines.append(line)
        if killed is None and line.startswith("[worker 1] --- trial"):
            trial_id = line.split("(id ")[1].split(";")[0]
            runs = study / "tuner" / f"trial_{trial_id}" / "runs.json"
            # Its entry, not one a process of the killed launcher left: a live process of this study.
            for _ in range(100):
                run = json.loads(runs.read_text())[-1] if runs.is_file() else {}
                if run.get("tuner_id") == "tuner1" and run["pid"] in _processes_mentioning(str(results)):
                    break
                time.sleep(0.1)
            os.kill(run["pid"], signal.SIGKILL)
            killed = trial_id
    out = "".join(lines)
    assert again.wait(timeout=900) == 0, out[-4000:]
    assert "resuming with" in out and killed is not None and "worker 1 died" in out
    trials = _trials(study)
    assert len(trials) == 5 and all(t["status"] == "COMPLETED" for t in trials.values()), \
        {k: (t["status"], t.get("message")) for k, t in trials.items()}
    assert _runners(study)[f"trial_{killed}"][-2:] == ["tuner1", "tuner1"]  # run again by the restarted worker


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
    port = _free_port()
    while port + 1 > 65535 or not _port_free(port + 1):
        port = _free_port()
    with pytest.raises(UserError, match=f"no chief serves 127.0.0.1:{port} \\(waited 0 s\\)"):
        distribute.worker_phase("127.0.0.1", port, wait_s=0.2, poll_s=0.05)
    # The local end of an SSH tunnel accepts a connection whether or not a chief serves behind it.
    with socket.socket() as tunnel_end, pytest.raises(UserError, match="no chief serves"):
        tunnel_end.bind(("127.0.0.1", port))
        tunnel_end.listen()
        distribute.worker_phase("127.0.0.1", port, wait_s=0.2, poll_s=0.05)
    for served, phase in ((port, "search"), (distribute.finalists_port(port), "finalists")):
        with _serving(served):
            assert distribute.worker_phase("127.0.0.1", port, wait_s=1) == phase
    # A worker started before its chief imports Keras while it waits: once, whatever the wait.
    calls = []
    with pytest.raises(UserError, match="no chief serves"):
        distribute.worker_phase("127.0.0.1", port, wait_s=0.3, poll_s=0.05, meanwhile=lambda: calls.append(1))
    assert calls == [1]
    with _serving(port):  # a chief already there: nothing to do meanwhile
        assert distribute.worker_phase("127.0.0.1", port, wait_s=1, meanwhile=lambda: calls.append(2)) == "search"
    assert calls == [1]
    # After the search: a chief that stopped (failures in a row) never serves the finalists.
    with pytest.raises(UserError, match=f"serves no finalists' oracle on port {port + 1} \\(waited 0 s\\): it stopped"):
        distribute.await_finalists("127.0.0.1", port, wait_s=0.2, poll_s=0.05)
    with _serving(distribute.finalists_port(port)):
        distribute.await_finalists("127.0.0.1", port, wait_s=1)
    # A chief still serving the search (other workers' last trials) is waited for, however long.
    import threading

    with _serving(port):
        waiter = threading.Thread(target=distribute.await_finalists, args=("127.0.0.1", port),
                                  kwargs={"wait_s": 0.2, "poll_s": 0.05}, daemon=True)
        waiter.start()
        time.sleep(3)
        assert waiter.is_alive()  # past wait_s, still waiting
        with _serving(distribute.finalists_port(port)):
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
    port = _free_port()
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", distribute.finalists_port(port)))
        other.listen()
        with pytest.raises(UserError, match=f"port {port + 1} on 127.0.0.1 is already in use .*finalists' oracle"):
            distribute.check_ports("127.0.0.1", port)


def test_a_child_whose_launcher_is_gone_exits_even_while_blocked_in_a_call():
    """The main thread blocked in C (a gRPC call to a dead chief) never runs Python's SIGTERM
    handler: the watchdog thread ends the process after the grace period anyway."""
    script = ("import select; from alexnet_search import distribute; distribute.ORPHAN_GRACE_S = 0.2; "
              "distribute.leave_with_launcher(); select.select([], [], [], 60)")
    env = {"PYTHONPATH": str(REPO), "PATH": os.environ["PATH"], distribute.LAUNCHER_PID: "999999999"}  # not its parent
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script], env=env, timeout=50)
    assert result.returncode == 128 + signal.SIGTERM and time.monotonic() - started < 30
    # Without the launcher's variable (a chief or worker started by hand) nothing watches.
    script = "from alexnet_search import distribute; distribute.leave_with_launcher(); print('stays')"
    out = subprocess.run([sys.executable, "-c", script], env={**env, distribute.LAUNCHER_PID: ""},
                         capture_output=True, text=True, timeout=50)
    assert out.returncode == 0 and out.stdout.strip() == "stays"


def _child(tmp_path, script: str, log, out):
    """A launcher's view of one child running `script`."""
    import threading
    return distribute._Process("worker 1", "tuner1", [sys.executable, "-c", script], dict(os.environ),
                               log, out, threading.Lock())


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full to fill a disk")
def test_a_log_on_a_full_disk_is_given_up_and_the_child_still_drained(tmp_path):
    import io
    out = io.StringIO()
    # A non-UTF-8 byte, then 300 KB: more than a pipe holds, so an undrained child would block.
    script = "import sys; sys.stdout.buffer.write(b'caf\\xe9\\n'); sys.stdout.flush(); " \
             "[print('x' * 99) for _ in range(3000)]; print('end')"
    child = _child(tmp_path, script, distribute.Path("/dev/full"), out)
    assert child.proc.wait(timeout=60) == 0
    child.pump.join(timeout=30)
    text = out.getvalue()
    assert text.count("[launcher]") == 1 and "log /dev/full cannot be written" in text
    assert "[worker 1] caf\ufffd\n" in text and text.endswith("[worker 1] end\n")
    assert text.count("x" * 99) == 3000


def test_a_log_whose_folder_is_emptied_is_written_again_under_its_name(tmp_path):
    import io
    import shutil
    logs = tmp_path / "logs"
    out = io.StringIO()
    # As with --overwrite: the chief empties the study, logs/ included, after the launcher opened them.
    script = f"import os, time\nprint('before', flush=True)\nwhile os.path.exists({str(logs)!r}): time.sleep(0.05)\n" \
             "print('after', flush=True)"
    child = _child(tmp_path, script, logs / "tuner1.log", out)
    deadline = time.monotonic() + 30
    while "before" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.05)
    shutil.rmtree(logs)
    assert child.proc.wait(timeout=30) == 0
    child.pump.join(timeout=30)
    assert (logs / "tuner1.log").read_text() == "after\n"
    assert out.getvalue() == "[worker 1] before\n[worker 1] after\n"


def test_a_worker_with_another_preset_is_refused_in_one_line(tmp_path, cifar_dir, tiny_config):
    from alexnet_search.config import load_config
    from alexnet_search.study import prepare_search, study_for

    results = tmp_path / "results"
    prepare_search(study_for(results, "tiny"), load_config(tiny_config), overwrite=False)  # the chief's part
    before = {p: p.read_bytes() for p in (results / "tiny").iterdir()}
    port = _free_port()
    with _serving(port):  # the chief's port, served: the worker stops waiting and checks
        done = run_cli("search", "--config", tiny_config, "--seed", 2, "--data-dir", cifar_dir, "--results-dir",
                       results, "--study", "tiny", "--worker", "1", "--oracle-port", port, cwd=tmp_path)
    _one_line_exit_2(done, "differs from its chief's")
    assert "in study.seed; start workers with the chief's --config and --seed" in done.stderr
    assert {p: p.read_bytes() for p in (results / "tiny").iterdir()} == before  # nothing written


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

    patient = distribute.PatientStub(Stub(), pause_s=0)
    assert patient.EndTrial("trial", wait_for_ready=True) == "ended"
    assert calls == [("trial", {"wait_for_ready": True})] * 3
    with pytest.raises(grpc.RpcError):
        patient.UpdateTrial("trial")
    calls.clear()
    with pytest.raises(grpc.RpcError):  # not forever: a chief that never returns ends the worker
        distribute.PatientStub(Stub(), give_up_s=0, pause_s=0).EndTrial("trial")
    assert len(calls) == 1


def test_workers_beyond_the_gpus_share_them_each_with_its_part_of_the_memory():
    one, two = [distribute.Gpu("0", 139.8)], [distribute.Gpu("0", 80.0), distribute.Gpu("1", 80.0)]
    # No GPU: the workers split the cores, unless the user sized a pool.
    assert distribute.placement(2, [], environ={}, cores=2) == [
        {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}] * 2
    assert distribute.placement(3, [], environ={"OMP_NUM_THREADS": "4"}, cores=8) == [
        {"TF_NUM_INTRAOP_THREADS": "2", "TF_NUM_INTEROP_THREADS": "2"}] * 3
    assert distribute.placement(4, [], environ={}, cores=2)[0]["TF_NUM_INTRAOP_THREADS"] == "1"  # never 0
    assert distribute.placement(2, two, environ={}) == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    shared = distribute.placement(4, one, environ={})
    assert shared == [{"CUDA_VISIBLE_DEVICES": "0", "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.225",
                       "TF_FORCE_GPU_ALLOW_GROWTH": "true"}] * 4  # JAX alone would take 75% each
    # Three on two GPUs: two share the busiest, so every worker gets half; the user's own setting wins.
    mine = distribute.placement(3, two, environ={"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.3"})
    assert [e["CUDA_VISIBLE_DEVICES"] for e in mine] == ["0", "1", "0"]
    assert all("XLA_PYTHON_CLIENT_MEM_FRACTION" not in e and e["TF_FORCE_GPU_ALLOW_GROWTH"] == "true" for e in mine)


def test_workers_auto_is_bounded_by_the_gpus_memory_and_the_cores_and_says_which():
    n, why = distribute.auto_workers([], 2, host_gib=24.0)  # a CPU: a worker per core
    assert n == 2 and "2 worker(s) of 1 thread(s) each" in why
    assert distribute.auto_workers([], 16, host_gib=8.0)[0] == 4  # memory is the bound
    assert distribute.auto_workers([], 4, host_gib=1.0)[0] == 1  # never 0
    n, why = distribute.auto_workers([distribute.Gpu("0", 139.8)], 16)
    assert n == 7 and "1 GPU(s) with 140 GiB hold 17" in why and "16 cores feed 7 at 2 each" in why
    assert distribute.auto_workers([distribute.Gpu("0", 15.8)], 64)[0] == 1  # memory is the bound
    assert distribute.auto_workers([distribute.Gpu("0", 4.0)], 64)[0] == 1  # never 0
    assert distribute.auto_workers([distribute.Gpu("0", 80.0)] * 2, 2)[0] == 1


def test_the_workers_flag_takes_a_count_or_auto():
    from alexnet_search.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["search", "--workers", "auto"]).workers == "auto"
    assert parser.parse_args(["search", "--workers", "3"]).workers == 3
    with pytest.raises(SystemExit):
        parser.parse_args(["search", "--workers", "many"])


@pytest.mark.slow
@pytest.mark.backends
@pytest.mark.skipif(os.environ.get("KERAS_BACKEND") != "jax", reason="Keras' DataParallel path is JAX's")
def test_several_devices_train_one_model_with_keras_data_parallel(tmp_path, cifar_dir, tiny_config):
    """The several-GPU path of one process, on two virtual CPU devices (no GPU here)."""
    import numpy as np

    done = run_cli("baseline", "--config", tiny_config, "--name", "paper", "--data-dir", cifar_dir,
                   "--results-dir", tmp_path / "results", cwd=tmp_path,
                   env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 devices per model (Keras DataParallel on JAX): global batch 128" in done.stdout  # 64 per device
    metrics = json.loads((tmp_path / "results" / "tiny" / "baselines" / "paper" / "metrics.json").read_text())
    assert np.isfinite(metrics["test_loss_mean"]) and 0 <= metrics["test_accuracy_mean"] <= 1


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

    with _echo_server(distribute.SERVER_OPTIONS) as port:
        relay = _Partition(port)
        channel = grpc.insecure_channel(f"127.0.0.1:{relay.port}", options=distribute.WORKER_CHANNEL_OPTIONS)

        class Stub:
            Echo = channel.unary_unary("/t.T/Echo")

        worker = distribute.PatientStub(Stub(), pause_s=0.2)
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
            assert result["s"] < 6 + 4 * distribute.KEEPALIVE_S, result  # seconds after the partition, not 30
        finally:
            channel.close()
            relay.close()


def test_the_chief_accepts_a_workers_keepalive_pings_while_it_trains():
    """Between calls (a worker trains for minutes between them) its pings are allowed: a gRPC
    server's default closes a connection pinging more than once per 5 minutes (too_many_pings),
    and each reconnection would be a call's wait."""
    import grpc

    with _echo_server(distribute.SERVER_OPTIONS) as port:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=distribute.WORKER_CHANNEL_OPTIONS)
        states = []
        channel.subscribe(states.append, try_to_connect=True)
        try:
            grpc.channel_ready_future(channel).result(timeout=10)
            time.sleep(5 * distribute.KEEPALIVE_S)  # idle: only pings on the connection
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

    create = distribute.paced(create_trial, pause_s=0.2)
    statuses = [create("tuner1").status for _ in range(3)]
    returned = time.monotonic()
    assert statuses == ["IDLE", "IDLE", "RUNNING"]
    assert asked[1] - asked[0] >= 0.2 and asked[2] - asked[1] >= 0.2
    assert returned - asked[2] < 0.1  # a trial to run is run at once
