"""A chief and its workers on separate hosts: two Linux network namespaces joined by a veth pair on
private test addresses, the study folder on the common disk as a shared filesystem. Nothing leaves
the machine. Needs root (CI and this project's machines run as root); skipped elsewhere.

A host that vanishes mid-trial is every process of its namespace killed at once, as a power cut
does; it comes back as a worker started again with the same id (README: "If a worker host dies").
A partition is the workers' end of the veth pair taken down, then up again.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

from conftest import REPO

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="network namespaces need root and ip"),
]

CHIEF_IP, WORKER_IP = "10.231.0.1", "10.231.0.2"  # a /24 of the private 10/8, made and removed here


def _ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def hosts():
    """Two namespaces, "chief" and "workers", joined by a veth pair; removed after the test."""
    tag = uuid.uuid4().hex[:6]
    names = {"chief": f"as-chief-{tag}", "workers": f"as-work-{tag}"}
    links = (f"asc{tag}", f"asw{tag}")
    try:
        for ns in names.values():
            try:
                _ip("netns", "add", ns)
            except subprocess.CalledProcessError as exc:  # root without CAP_SYS_ADMIN: a locked-down container
                pytest.skip(f"cannot make a network namespace: {exc.stderr.decode().strip()}")
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "add", links[0], "type", "veth", "peer", "name", links[1])
        for link, ns, address in zip(links, names.values(), (CHIEF_IP, WORKER_IP)):
            _ip("link", "set", link, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", link)
            _ip("-n", ns, "link", "set", link, "up")
        yield {**names, "worker_link": links[1]}
    finally:
        for ns in names.values():
            for pid in _pids_in(ns):
                os.kill(pid, signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _pids_in(ns: str) -> list[int]:
    found = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
    return [int(p) for p in found]


def _start(ns: str, role: list[str], args: list[str], log) -> subprocess.Popen:
    env = {"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "PATH": os.environ["PATH"]}
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "alexnet_search", "search", *args,
                             *role, "--oracle-host", CHIEF_IP], env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait_for(condition, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _study(tmp_path, cifar_dir, tiny_config, hosts, port: int, *extra_logs: str):
    """A chief serving in its namespace and workers 1 and 2 in theirs: (args, study, chief,
    workers, logs), each process's output in tmp_path/<name>.log."""
    args = ["--config", str(tiny_config), "--data-dir", str(cifar_dir), "--results-dir", str(tmp_path / "results"),
            "--oracle-port", str(port)]
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("chief", "worker1", "worker2", *extra_logs)}
    chief = _start(hosts["chief"], ["--chief"], args, logs["chief"])
    _wait_for(lambda: "serving the oracle" in (tmp_path / "chief.log").read_text(), 120, "the chief to serve")
    workers = [_start(hosts["workers"], ["--worker", str(n)], args, logs[f"worker{n}"]) for n in (1, 2)]
    return args, tmp_path / "results" / "tiny", chief, workers, logs


def _each_trial_completed_once(study):
    trials = {p.parent.name: json.loads(p.read_text()) for p in study.glob("tuner/trial_*/trial.json")}
    assert len(trials) == 5 and all(t["status"] == "COMPLETED" for t in trials.values())
    runs = {p.parent.name: [r.get("ended") for r in json.loads(p.read_text())]
            for p in study.glob("tuner/trial_*/runs.json")}
    assert all(ended == ["completed"] for ended in runs.values()), runs


def test_a_workers_host_that_vanishes_then_a_partition_lose_no_trial(tmp_path, cifar_dir, tiny_config, hosts):
    """The workers' host goes mid-trial; worker 1 comes back (its id is handed back its trial),
    worker 2 never does (its trial goes on after the lease); then a 30 s partition, shorter than
    the lease, while worker 1 trains. Three faults in one study: make test's budget."""
    tiny_config.write_text(tiny_config.read_text() + "\n[distributed]\nlease_s = 60\n")
    args, study, chief, workers, logs = _study(tmp_path, cifar_dir, tiny_config, hosts, 8470, "worker1-again")

    def running_on(tuner_id):
        for runs in study.glob("tuner/trial_*/runs.json"):
            entries = json.loads(runs.read_text())
            if entries and entries[-1]["tuner_id"] == tuner_id and "ended" not in entries[-1]:
                return runs.parent.name
        return None

    lost, never = _wait_for(lambda: (running_on("tuner1"), running_on("tuner2")) if all(
        (running_on("tuner1"), running_on("tuner2"))) else None, 300, "both workers to be in a trial")
    for pid in _pids_in(hosts["workers"]):  # the workers' host goes: both its workers, at once
        os.kill(pid, signal.SIGKILL)
    for worker in workers:
        worker.wait(timeout=30)
    again = _start(hosts["workers"], ["--worker", "1"], args, logs["worker1-again"])
    _wait_for(lambda: "--- trial" in (tmp_path / "worker1-again.log").read_text(), 300, "worker 1 to train again")
    _ip("-n", hosts["workers"], "link", "set", hosts["worker_link"], "down")
    time.sleep(30)
    _ip("-n", hosts["workers"], "link", "set", hosts["worker_link"], "up")
    assert again.wait(timeout=600) == 0, (tmp_path / "worker1-again.log").read_text()[-3000:]
    assert chief.wait(timeout=120) == 0, (tmp_path / "chief.log").read_text()[-3000:]

    trials = {p.parent.name: json.loads(p.read_text()) for p in study.glob("tuner/trial_*/trial.json")}
    assert len(trials) == 5 and all(t["status"] == "COMPLETED" for t in trials.values())
    runners = {p.parent.name: [r["tuner_id"] for r in json.loads(p.read_text())]
               for p in study.glob("tuner/trial_*/runs.json")}
    assert runners[lost][-2:] == ["tuner1", "tuner1"]  # started on the lost host, finished after it came back
    assert runners[never][-2:] == ["tuner2", "tuner1"]  # its worker never came back: handed on
    chief_log = (tmp_path / "chief.log").read_text()
    assert f"serving the oracle on {CHIEF_IP}:8470" in chief_log and "other hosts can reach" in chief_log
    assert f"no word from worker tuner2 for 60 s ([distributed] lease_s): its trial {never.split('_')[1]} goes to " \
           f"the next worker that asks" in chief_log  # given up, not waited for
    assert "no word from worker tuner1" not in chief_log  # back in time, and the partition was shorter
    assert json.loads((study / "search_summary.json").read_text())["trials_completed"] == 5


def test_a_chief_killed_and_restarted_while_remote_workers_wait_loses_and_repeats_nothing(
        tmp_path, cifar_dir, tiny_config, hosts):
    """Keras Tuner's restarted oracle sent the running trials for retry (each ran twice), and a call
    cut by the dying chief failed the trial its worker had just trained to the end."""
    args, study, _, workers, logs = _study(tmp_path, cifar_dir, tiny_config, hosts, 8471, "chief-again")
    _wait_for(lambda: "completed (tuner" in (tmp_path / "chief.log").read_text(), 300, "a first trial")
    for pid in _pids_in(hosts["chief"]):  # the chief's host goes; the workers train on, then wait
        os.kill(pid, signal.SIGKILL)
    time.sleep(3)
    chief = _start(hosts["chief"], ["--chief"], args, logs["chief-again"])
    for n, worker in zip((1, 2), workers):
        assert worker.wait(timeout=600) == 0, (tmp_path / f"worker{n}.log").read_text()[-3000:]
    assert chief.wait(timeout=120) == 0, (tmp_path / "chief-again.log").read_text()[-3000:]

    _each_trial_completed_once(study)  # none lost, none trained twice
    assert "resuming with" in (tmp_path / "chief-again.log").read_text()
