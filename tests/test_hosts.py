"""A chief and its workers on separate hosts: three Linux network namespaces ("chief", "host1",
"host2"), each worker host joined to the chief's by a veth pair on private test addresses and
routed through it, the study folder on the common disk as a shared filesystem. Nothing leaves the
machine. Needs root (CI and this project's machines run as root); skipped elsewhere. Each study
is the tiny preset's twice over: 10 trials, worker 1 on host1 and worker 2 on host2.

A host that vanishes mid-trial is every process of its namespace killed at once, as a power cut
does; it comes back as a worker started again with the same id (README: "If a worker host dies").
A partition is a host's end of its veth pair taken down, then up again.
"""

import json
import os
import re
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
    pytest.mark.alone,  # make test runs these by themselves: their leases and partitions are wall-clock
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="network namespaces need root and ip"),
]

# Private test addresses, made and removed here: the chief's end and host N's end of link N.
CHIEF_IP = "10.231.1.1"
HOST_IPS = {1: ("10.231.1.1", "10.231.1.2"), 2: ("10.231.2.1", "10.231.2.2")}
TRIALS = 10
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def _ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def hosts():
    """{"chief", "host1", "host2": namespace, "link1": host1's end of its link}; the chief serves
    on CHIEF_IP, which host2 reaches through the chief's namespace. Removed after the test."""
    tag = uuid.uuid4().hex[:6]
    names = {"chief": f"as-chief-{tag}", "host1": f"as-h1-{tag}", "host2": f"as-h2-{tag}"}
    try:
        for ns in names.values():
            try:
                _ip("netns", "add", ns)
            except subprocess.CalledProcessError as exc:  # root without CAP_SYS_ADMIN: a locked-down container
                pytest.skip(f"cannot make a network namespace: {exc.stderr.decode().strip()}")
            _ip("-n", ns, "link", "set", "lo", "up")
        for n, (chief_end, host_end) in HOST_IPS.items():
            near, far = f"asc{n}{tag}", f"ash{n}{tag}"
            _ip("link", "add", near, "type", "veth", "peer", "name", far)
            for link, ns, address in ((near, names["chief"], chief_end), (far, names[f"host{n}"], host_end)):
                _ip("link", "set", link, "netns", ns)
                _ip("-n", ns, "addr", "add", f"{address}/24", "dev", link)
                _ip("-n", ns, "link", "set", link, "up")
            _ip("-n", names[f"host{n}"], "route", "add", "default", "via", chief_end)
        yield {**names, "link1": f"ash1{tag}"}
    finally:
        for ns in names.values():
            for pid in _pids_in(ns):
                os.kill(pid, signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _pids_in(ns: str) -> list[int]:
    found = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
    return [int(p) for p in found]


def _start(ns: str, role: list[str], args: list[str], log, oracle_host: str = CHIEF_IP) -> subprocess.Popen:
    env = {"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "PATH": os.environ["PATH"]}
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "alexnet_search", "search", *args,
                             *role, "--oracle-host", oracle_host], env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait_for(condition, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _study(tmp_path, cifar_dir, tiny_config, hosts, port: int, *extra_logs: str, oracle_host: str = CHIEF_IP,
           workers_first: bool = False):
    """A chief serving in its namespace, worker 1 on host1 and worker 2 on host2 (started before
    their chief, and seen waiting for it, with `workers_first`): (args, study, chief, workers,
    logs), each process's output in tmp_path/<name>.log."""
    tiny_config.write_text(tiny_config.read_text().replace("factor = 2\n", "factor = 2\nhyperband_iterations = 2\n"))
    args = ["--config", str(tiny_config), "--data-dir", str(cifar_dir), "--results-dir", str(tmp_path / "results"),
            "--oracle-port", str(port)]
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("chief", "worker1", "worker2", *extra_logs)}

    def start_workers():
        return [_start(hosts[f"host{n}"], ["--worker", str(n)], args, logs[f"worker{n}"], oracle_host) for n in (1, 2)]

    if workers_first:
        workers = start_workers()
        waiting = f"waiting up to 600 s for the chief at {oracle_host}:{port}"
        _wait_for(lambda: all(waiting in (tmp_path / f"worker{n}.log").read_text() for n in (1, 2)), 120,
                  "the workers to wait for their chief")
    chief = _start(hosts["chief"], ["--chief"], args, logs["chief"], oracle_host)
    _wait_for(lambda: "serving the oracle" in (tmp_path / "chief.log").read_text(), 120, "the chief to serve")
    if not workers_first:
        workers = start_workers()
    return args, tmp_path / "results" / "tiny", chief, workers, logs


def _trials(study) -> dict:
    return {p.parent.name: json.loads(p.read_text()) for p in study.glob("tuner/trial_*/trial.json")}


def _each_trial_completed_once(study):
    trials = _trials(study)
    assert len(trials) == TRIALS and all(t["status"] == "COMPLETED" for t in trials.values())
    runs = {p.parent.name: [r.get("ended") for r in json.loads(p.read_text())]
            for p in study.glob("tuner/trial_*/runs.json")}
    assert all(ended == ["completed"] for ended in runs.values()), runs


def test_worker_hosts_that_vanish_then_a_partition_lose_no_trial(tmp_path, cifar_dir, tiny_config, hosts):
    """The workers start before their chief and wait for it; both worker hosts go mid-trial; host1
    comes back (its worker's id is handed back its trial); host2 is replaced by a machine whose
    worker takes a new id, 3, as a cluster hands out a fresh node: worker 2 never returns, and its
    trial goes on after the lease. Then a 30 s partition of host1, shorter than the lease, while
    its worker trains and worker 3 goes on. Four faults in one study: make test's budget."""
    tiny_config.write_text(tiny_config.read_text() + "\n[distributed]\nlease_s = 45\n")
    args, study, chief, workers, logs = _study(tmp_path, cifar_dir, tiny_config, hosts, 8470, "worker1-again",
                                               "worker3", workers_first=True)

    def running_on(tuner_id):
        for runs in study.glob("tuner/trial_*/runs.json"):
            entries = json.loads(runs.read_text())
            if entries and entries[-1]["tuner_id"] == tuner_id and "ended" not in entries[-1]:
                return runs.parent.name
        return None

    lost, never = _wait_for(lambda: (running_on("tuner1"), running_on("tuner2")) if all(
        (running_on("tuner1"), running_on("tuner2"))) else None, 300, "both workers to be in a trial")
    for pid in _pids_in(hosts["host1"]) + _pids_in(hosts["host2"]):  # both hosts go at once
        os.kill(pid, signal.SIGKILL)
    for worker in workers:
        worker.wait(timeout=30)
    again = _start(hosts["host1"], ["--worker", "1"], args, logs["worker1-again"])
    replacement = _start(hosts["host2"], ["--worker", "3"], args, logs["worker3"])
    _wait_for(lambda: "--- trial" in (tmp_path / "worker1-again.log").read_text(), 300, "worker 1 to train again")
    _ip("-n", hosts["host1"], "link", "set", hosts["link1"], "down")
    time.sleep(30)
    _ip("-n", hosts["host1"], "link", "set", hosts["link1"], "up")
    assert again.wait(timeout=600) == 0, (tmp_path / "worker1-again.log").read_text()[-3000:]
    assert replacement.wait(timeout=600) == 0, (tmp_path / "worker3.log").read_text()[-3000:]
    assert chief.wait(timeout=120) == 0, (tmp_path / "chief.log").read_text()[-3000:]

    trials = _trials(study)
    assert len(trials) == TRIALS and all(t["status"] == "COMPLETED" for t in trials.values())
    runners = {p.parent.name: [r["tuner_id"] for r in json.loads(p.read_text())]
               for p in study.glob("tuner/trial_*/runs.json")}
    assert runners[lost][-2:] == ["tuner1", "tuner1"]  # started on the lost host, finished after it came back
    assert runners[never][0] == "tuner2" and runners[never][-1] in ("tuner1", "tuner3")  # never came back: handed on
    assert "tuner3" in {r[-1] for r in runners.values()}  # the replacement trained
    assert all(len(r) == 1 for t, r in runners.items() if t not in (lost, never)), runners  # none run twice
    chief_log = (tmp_path / "chief.log").read_text()
    assert f"serving the oracle on {CHIEF_IP}:8470" in chief_log and "other hosts can reach" in chief_log
    assert f"no word from worker tuner2 for 45 s ([distributed] lease_s): its trial {never.split('_')[1]} goes to " \
           f"the next worker that asks" in chief_log  # given up, not waited for
    assert "no word from worker tuner1" not in chief_log  # back in time, and the partition was shorter
    assert json.loads((study / "search_summary.json").read_text())["trials_completed"] == TRIALS


@pytest.fixture
def ssh_key(tmp_path):
    """(client key, sshd config): an sshd for the chief's host that lets that key log in as root
    and forward ports, on CHIEF_IP only; everything in tmp_path."""
    if not os.access(SSHD, os.X_OK) or shutil.which("ssh") is None:
        pytest.skip("the SSH tunnel test needs OpenSSH's sshd and ssh (.ci/run installs openssh-server)")
    keys = tmp_path / "ssh"
    keys.mkdir()
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True)
    shutil.copy(keys / "client.pub", keys / "authorized_keys")
    config = keys / "sshd_config"
    config.write_text(f"ListenAddress {CHIEF_IP}\nHostKey {keys / 'host'}\nAuthorizedKeysFile {keys / 'authorized_keys'}\n"
                      "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                      "UsePAM no\nStrictModes no\nPidFile none\nAllowTcpForwarding yes\n")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    return keys / "client", config


def _sshd(ns: str, config, log) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", ns, SSHD, "-D", "-e", "-f", str(config)], stdout=log,
                            stderr=subprocess.STDOUT)


def _tunnel(ns: str, key, port: int, log) -> subprocess.Popen:
    """`ssh -N -L` from a worker host to the chief's loopback ports (the search's and the
    finalists', the next one), started again a second after it drops (what autossh does): the
    README's way to reach a chief that serves on loopback."""
    forwards = " ".join(f"-L 127.0.0.1:{p}:127.0.0.1:{p}" for p in (port, port + 1))
    ssh = (f"ssh -N -F /dev/null -i {key} -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
           f"-o ExitOnForwardFailure=yes -o ServerAliveInterval=5 -o LogLevel=ERROR {forwards} root@{CHIEF_IP}")
    return subprocess.Popen(["ip", "netns", "exec", ns, "sh", "-c", f"while :; do {ssh}; sleep 1; done"],
                            stdout=log, stderr=subprocess.STDOUT)


def _reaches(ns: str, host: str, port: int) -> bool:
    """Whether a gRPC server answers at host:port from namespace `ns`, as a worker checks."""
    probe = f"import sys; from alexnet_search.cluster import _listening; sys.exit(not _listening({host!r}, {port}))"
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", probe], capture_output=True,
                          env={"PYTHONPATH": str(REPO), "PATH": os.environ["PATH"]}).returncode == 0


def test_a_chief_on_loopback_through_ssh_tunnels_killed_and_restarted_loses_and_repeats_nothing(
        tmp_path, cifar_dir, tiny_config, hosts, ssh_key):
    """The README's private setup: the chief serves on its host's loopback only, and each worker
    host reaches it through SSH tunnels, started before their chief (the tunnels' ends accept
    connections before any chief serves: the workers must still wait). Then the chief's host dies
    (sshd with it) and comes back: Keras Tuner's restarted oracle sent the running trials for retry
    (each ran twice), and a call cut by the dying chief failed the trial its worker had just
    trained to the end. A worker with another study seed is refused on the way, and the finalist's
    confirmation, on the next port, goes through the tunnels too; the chief's host dies once more
    during it, and the third chief resumes the confirmation where its workers are."""
    key, sshd_config = ssh_key
    port = 8471
    # One finalist and no recipe beside it: its race (cpu.toml's leader_seeds) crosses the tunnels,
    # at the least test time.
    tiny_config.write_text(tiny_config.read_text().replace("finalists = 0", "finalists = 1\nbaselines = []")
                           .replace("seeds = 2", "seeds = 1"))
    sshd_log = open(tmp_path / "sshd.log", "w")
    _sshd(hosts["chief"], sshd_config, sshd_log)
    for n in (1, 2):
        _tunnel(hosts[f"host{n}"], key, port, open(tmp_path / f"tunnel{n}.log", "w"))
    args, study, chief, workers, logs = _study(tmp_path, cifar_dir, tiny_config, hosts, port, "chief-again",
                                               "chief-third", oracle_host="127.0.0.1", workers_first=True)
    assert "other hosts can reach" not in (tmp_path / "chief.log").read_text()  # no warning: it is private
    assert _reaches(hosts["host1"], "127.0.0.1", port)  # through the tunnel
    assert not _reaches(hosts["host1"], CHIEF_IP, port)  # and no other way
    # A third worker, on host2 with another study seed: refused before it takes a trial.
    other = _start(hosts["host2"], ["--worker", "3", "--seed", "2"], args, open(tmp_path / "worker3.log", "w"),
                   "127.0.0.1")

    assert other.wait(timeout=300) == 2
    refused = (tmp_path / "worker3.log").read_text().strip().splitlines()
    assert refused[-1].startswith("error: this worker's ") and "differs from its chief's" in refused[-1], refused
    assert not any(line.startswith("--- trial") for line in refused)

    _wait_for(lambda: "completed (tuner" in (tmp_path / "chief.log").read_text(), 300, "a first trial")
    for pid in _pids_in(hosts["chief"]):  # the chief's host goes; the workers train on, then wait
        os.kill(pid, signal.SIGKILL)
    chief.wait(timeout=30)
    time.sleep(3)
    _sshd(hosts["chief"], sshd_config, sshd_log)
    chief = _start(hosts["chief"], ["--chief"], args, logs["chief-again"], "127.0.0.1")

    def confirming():  # a worker has begun the finalist's first run, on the finalists' port
        return any(re.search(r"--- \S+ \S+ seed 1001 \(run ", (tmp_path / f"worker{n}.log").read_text()) for n in (1, 2))

    _wait_for(confirming, 300, "the confirmation's first run")
    for pid in _pids_in(hosts["chief"]):  # and goes again, during the confirmation
        os.kill(pid, signal.SIGKILL)
    chief.wait(timeout=30)
    time.sleep(3)
    _sshd(hosts["chief"], sshd_config, sshd_log)
    chief = _start(hosts["chief"], ["--chief"], args, logs["chief-third"], "127.0.0.1")
    for n, worker in zip((1, 2), workers):
        assert worker.wait(timeout=600) == 0, (tmp_path / f"worker{n}.log").read_text()[-3000:]
    assert chief.wait(timeout=120) == 0, (tmp_path / "chief-third.log").read_text()[-3000:]

    _each_trial_completed_once(study)  # none lost, none trained twice
    assert "resuming with" in (tmp_path / "chief-again.log").read_text()
    assert {json.loads(p.read_text())[0]["tuner_id"] for p in study.glob("tuner/trial_*/runs.json")} == {
        "tuner1", "tuner2"}  # both hosts trained, each through its tunnel
    # The confirmation survived its chief: each of the finalist's 3 runs (cpu.toml's leader_seeds)
    # completed, once, by the workers, through the tunnels to the third chief.
    runs = {p.parent.name: [(r["tuner_id"], r.get("ended")) for r in json.loads(p.read_text())]
            for p in study.glob("finalists/trial_*/runs.json")}
    assert len(runs) == 3 and all(len(r) == 1 and r[0][1] == "completed" and r[0][0] in ("tuner1", "tuner2")
                                  for r in runs.values()), runs
    assert "resuming with" in (tmp_path / "chief-third.log").read_text()
    adopted = json.loads((study / "best_hyperparameters.json").read_text())
    assert adopted["confirmed"]["mean"] >= 0 and len(adopted["confirmed"]["scores"]) == 3
