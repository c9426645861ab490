"""launcher.py: a chief and its workers on one machine: where each runs, their logs, and what happens when one dies."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from alexnet_search import devices, launcher

from conftest import REPO, free_port, trial_records, trial_runners

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
            str(cifar_dir), "--results-dir", str(results), "--workers", "2", "--oracle-port", str(free_port())]
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
    for _ in range(int(launcher.ORPHAN_GRACE_S + 30) * 5):
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
                entries = json.loads(runs.read_text()) if runs.is_file() else []
                run = entries[-1] if entries else {}
                if run.get("tuner_id") == "tuner1" and run["pid"] in _processes_mentioning(str(results)):
                    break
                time.sleep(0.1)
            if len(entries) > 1:
                # The killed launcher's run of it already died once: a second death fails a trial
                # by design. Kill worker 1 on a trial it starts fresh.
                continue
            os.kill(run["pid"], signal.SIGKILL)
            killed = trial_id
    out = "".join(lines)
    assert again.wait(timeout=900) == 0, out[-4000:]
    assert "resuming with" in out and killed is not None and "worker 1 died" in out
    trials = trial_records(study)
    assert len(trials) == 5 and all(t["status"] == "COMPLETED" for t in trials.values()), \
        {k: (t["status"], t.get("message")) for k, t in trials.items()}
    assert trial_runners(study)[f"trial_{killed}"][-2:] == ["tuner1", "tuner1"]  # run again by the restarted worker


def test_a_child_whose_launcher_is_gone_exits_even_while_blocked_in_a_call():
    """The main thread blocked in C (a gRPC call to a dead chief) never runs Python's SIGTERM
    handler: the watchdog thread ends the process after the grace period anyway."""
    script = ("import select; from alexnet_search import launcher; launcher.ORPHAN_GRACE_S = 0.2; "
              "launcher.leave_with_launcher(); select.select([], [], [], 60)")
    env = {"PYTHONPATH": str(REPO), "PATH": os.environ["PATH"], launcher.LAUNCHER_PID: "999999999"}  # not its parent
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script], env=env, timeout=50)
    assert result.returncode == 128 + signal.SIGTERM and time.monotonic() - started < 30
    # Without the launcher's variable (a chief or worker started by hand) nothing watches.
    script = "from alexnet_search import launcher; launcher.leave_with_launcher(); print('stays')"
    out = subprocess.run([sys.executable, "-c", script], env={**env, launcher.LAUNCHER_PID: ""},
                         capture_output=True, text=True, timeout=50)
    assert out.returncode == 0 and out.stdout.strip() == "stays"


def _child(tmp_path, script: str, log, out):
    """A launcher's view of one child running `script`."""
    import threading
    return launcher._Process("worker 1", "tuner1", [sys.executable, "-c", script], dict(os.environ),
                               log, out, threading.Lock())


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full to fill a disk")
def test_a_log_on_a_full_disk_is_given_up_and_the_child_still_drained(tmp_path):
    import io
    out = io.StringIO()
    # A non-UTF-8 byte, then 300 KB: more than a pipe holds, so an undrained child would block.
    script = "import sys; sys.stdout.buffer.write(b'caf\\xe9\\n'); sys.stdout.flush(); " \
             "[print('x' * 99) for _ in range(3000)]; print('end')"
    child = _child(tmp_path, script, launcher.Path("/dev/full"), out)
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


def test_workers_beyond_the_gpus_share_them_each_with_its_part_of_the_memory():
    one, two = [devices.Gpu("0", 139.8)], [devices.Gpu("0", 80.0), devices.Gpu("1", 80.0)]
    # No GPU: the workers split the cores, unless the user sized a pool.
    assert launcher.placement(2, [], environ={}, cores=2) == [
        {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}] * 2
    assert launcher.placement(3, [], environ={"OMP_NUM_THREADS": "4"}, cores=8) == [
        {"TF_NUM_INTRAOP_THREADS": "2", "TF_NUM_INTEROP_THREADS": "2"}] * 3
    assert launcher.placement(4, [], environ={}, cores=2)[0]["TF_NUM_INTRAOP_THREADS"] == "1"  # never 0
    assert launcher.placement(2, two, environ={}) == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    shared = launcher.placement(4, one, environ={})
    assert shared == [{"CUDA_VISIBLE_DEVICES": "0", "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.225",
                       "TF_FORCE_GPU_ALLOW_GROWTH": "true"}] * 4  # JAX alone would take 75% each
    # Three on two GPUs: two share the busiest, so every worker gets half; the user's own setting wins.
    mine = launcher.placement(3, two, environ={"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.3"})
    assert [e["CUDA_VISIBLE_DEVICES"] for e in mine] == ["0", "1", "0"]
    assert all("XLA_PYTHON_CLIENT_MEM_FRACTION" not in e and e["TF_FORCE_GPU_ALLOW_GROWTH"] == "true" for e in mine)


def test_workers_auto_is_bounded_by_the_gpus_memory_and_the_cores_and_says_which():
    n, why = launcher.auto_workers([], 2, host_gib=24.0)  # a CPU: a worker per core
    assert n == 2 and "2 worker(s) of 1 thread(s) each" in why
    assert launcher.auto_workers([], 16, host_gib=8.0)[0] == 4  # memory is the bound
    assert launcher.auto_workers([], 4, host_gib=1.0)[0] == 1  # never 0
    n, why = launcher.auto_workers([devices.Gpu("0", 139.8)], 16)
    assert n == 7 and "1 GPU(s) with 140 GiB hold 17" in why and "16 cores feed 7 at 2 each" in why
    assert launcher.auto_workers([devices.Gpu("0", 15.8)], 64)[0] == 1  # memory is the bound
    assert launcher.auto_workers([devices.Gpu("0", 4.0)], 64)[0] == 1  # never 0
    assert launcher.auto_workers([devices.Gpu("0", 80.0)] * 2, 2)[0] == 1


def test_the_workers_flag_takes_a_count_or_auto():
    from alexnet_search.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["search", "--workers", "auto"]).workers == "auto"
    assert parser.parse_args(["search", "--workers", "3"]).workers == 3
    with pytest.raises(SystemExit):
        parser.parse_args(["search", "--workers", "many"])


def test_a_link_planted_where_a_log_goes_is_not_written_through(tmp_path):
    """A child's log was opened for appending through whatever stood at its name."""
    import io

    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "tuner1.log").symlink_to(target)
    out = io.StringIO()
    child = _child(tmp_path, "print('hello', flush=True)", tmp_path / "logs" / "tuner1.log", out)
    assert child.proc.wait(timeout=60) == 0
    child.pump.join(timeout=30)
    assert target.read_text() == "keep me"
    assert "tuner1.log cannot be written" in out.getvalue() and "[worker 1] hello" in out.getvalue()
