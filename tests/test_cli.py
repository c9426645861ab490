"""The real command line, end to end, on a tiny study: search, resume, retrain-best, predict, plan.

Slow (each run imports the backend and trains); the whole file takes a few minutes on 2 cores.
Tests marked `backends` also run in `make test`'s JAX leg, an environment without TensorFlow.
"""

import argparse
import re
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from types import SimpleNamespace

from alexnet_search.space import SEED_SCRIPT

from conftest import REPO, make_cifar_dir, make_tiny_config, options_without_help, run_cli

slow = pytest.mark.slow
backends = pytest.mark.backends


def _events(folder):
    from alexnet_search import tboard

    for sub in sorted({p.parent for p in folder.rglob("events.out.tfevents.*")}):
        yield from tboard.events(sub)


def _plugins_and_tags(folder):
    plugins, tags = set(), set()
    for event in _events(folder):
        for value in event.summary.value:
            tags.add(value.tag)
            if value.metadata.plugin_data.plugin_name:
                plugins.add(value.metadata.plugin_data.plugin_name)
    return plugins, tags


# Session-scoped: under pytest-xdist a worker runs other modules' tests between the ones sharing
# it, and a module-scoped fixture would be made again after each of those.
@pytest.fixture(scope="session")
def searched(tmp_path_factory):
    """One finished tiny study (5 Hyperband trials: 4 configurations, 1 promotion), shared by the
    tests that read it or add to it (retrain-best), so the module runs one search, not six."""
    root = tmp_path_factory.mktemp("searched")
    cifar, config = make_cifar_dir(root), make_tiny_config(root, finalists=2)
    result = run_cli("search", "--config", config, "--data-dir", cifar, "--results-dir", root / "results", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return SimpleNamespace(root=root, study=root / "results" / "tiny", result=result, cifar=cifar, config=config)


def _gated(preset) -> dict:
    """The speed options a run of `preset` trains with on this machine (`devices.precision_and_xla`)."""
    from alexnet_search.config import load_config
    from alexnet_search.devices import precision_and_xla

    precision, jit, _ = precision_and_xla(load_config(preset))
    return {"precision": precision, "jit_compile": jit}


@slow
@backends
def test_search_runs_hyperband_with_progress_and_tensorboard(searched):
    study, result = searched.study, searched.result
    out = result.stdout
    assert "device: CPU" in out
    assert "study tiny: 5 trials, 7 epochs" in out
    for k in range(1, 6):
        assert f"--- trial {k}/5" in out
    assert "continues trial" in out  # Hyperband promoted a configuration
    assert "left" in out and "elapsed" in out and "epoch 2/2" in out
    assert "best trials:" in out and "next: make retrain-best" in out
    assert "Traceback" not in result.stderr and "absl::InitializeLog" not in result.stderr
    if os.environ.get("KERAS_BACKEND") == "jax":  # what XLA compiled, trial by trial and in all
        assert re.search(r"trial 1/5 done: .*; XLA \d+ programs in [\d.]+ s, \d+ from the cache\n", out)
        assert re.search(r"\nthis run: XLA \d+ programs in [\d.]+ s, \d+ from the cache\n", out)
    else:
        assert "programs in" not in out
    # Then its 2 best configurations (a promoted trial repeats its parent's: counted once) again,
    # and the paper's recipe ([confirm] baselines), with 2 seeds each, for [confirm] epochs (2);
    # then the best mean a third seed (cpu.toml's leader_seeds), the lead passing on if it falls;
    # the best mean is adopted.
    assert "confirming 2 finalists against baseline paper: each trained again with seeds 1001, 1002 for 2 epochs " \
        "and scored on validation, then the best mean again with seed 1003" in out
    for k in (1, 2):
        assert f"--- finalist {k} seed 1001 (run" in out and f"--- finalist {k} seed 1002 (run" in out
    assert "--- baseline paper seed 1001 (run 5/7; the preset's [baselines.paper])" in out
    assert re.search(r"--- \S+ \S+ seed 1003 \(run 7/7; .*an extra seed, racing for the lead\)", out)
    assert "[baseline paper seed 1002] epoch 2/2" in out and "finalists confirmed in" in out
    confirmed = json.loads((study / "finalists.json").read_text())
    assert confirmed["finished"] and confirmed["seeds"] == [1001, 1002] and confirmed["epochs"] == 2
    finalists = confirmed["finalists"]
    assert sorted(f["rank"] for f in finalists) == [0, 1, 2]
    assert len({json.dumps(f["hyperparameters"], sort_keys=True) for f in finalists}) == 3
    assert all(f["complete"] for f in finalists)
    assert len(finalists[0]["runs"]) == 3 and sorted(len(f["runs"]) for f in finalists) in ([2, 2, 3], [2, 3, 3])
    assert [f["mean"] for f in finalists] == sorted((f["mean"] for f in finalists), reverse=True)
    paper = next(f for f in finalists if f.get("baseline") == "paper")
    assert paper["trial_id"] == "paper" and paper["search_score"] is None
    assert paper["hyperparameters"] == {**{k: SEED_SCRIPT[k] for k in paper["hyperparameters"]}, "lr": 0.01,
                                        "lr_schedule": "plateau", "momentum": 0.9, "weight_decay": 5e-4, "dropout": 0.5}

    trials = [json.loads(p.read_text()) for p in sorted((study / "tuner").glob("trial_*/trial.json"))]
    assert [t["status"] for t in trials] == ["COMPLETED"] * 5
    for name in ("study.json", "config.json", "versions.json", "best_hyperparameters.json"):
        assert (study / name).is_file(), name
    # What the runs trained in, after this machine's gate (cpu.toml asks for mixed_bfloat16).
    assert json.loads((study / "config.json").read_text())["trained_with"] == _gated(searched.config)
    best = json.loads((study / "best_hyperparameters.json").read_text())
    assert set(best["hyperparameters"]) >= {"dropout", "conv3_filters", "lr"}
    assert not any("/" in k for k in best["hyperparameters"])  # no tuner/ or finalist/ bookkeeping
    assert (best["trial_id"], best["hyperparameters"]) == (finalists[0]["trial_id"], finalists[0]["hyperparameters"])
    assert best["confirmed"]["mean"] == finalists[0]["mean"]
    assert best.get("baseline") == finalists[0].get("baseline")

    tb = study / "tensorboard"
    for t in trials:
        run = tb / t["trial_id"] / "execution0"
        plugins, _ = _plugins_and_tags(run)
        assert "hparams" in plugins, f"trial {t['trial_id']} has no HParams session"
        _, tags = _plugins_and_tags(run / "validation")
        assert "epoch_accuracy" in tags and "epoch_loss" in tags
    root_plugins = set()
    for event in tf_events_in(tb):
        root_plugins |= {v.metadata.plugin_data.plugin_name for v in event.summary.value}
    assert "hparams" in root_plugins  # the experiment config, so the dashboard lists every trial
    for f in finalists:  # a run and an HParams session per finalist seed, the baseline's too
        for seed in (r["seed"] for r in f["runs"]):
            run = tb / "finalists" / f["trial_id"] / f"seed{seed}"
            assert "hparams" in _plugins_and_tags(run)[0]
            assert "epoch_accuracy" in _plugins_and_tags(run / "validation")[1]


def tf_events_in(folder):
    """Events of the files directly in `folder` (not in its runs)."""
    from alexnet_search import tboard

    yield from tboard.events(folder)


@slow
@backends
def test_running_again_resumes_without_redoing_trials(searched):
    study = searched.study
    before = {p: p.stat().st_mtime_ns for p in (study / "tuner").glob("trial_*/trial.json")}
    again = run_cli("search", "--config", searched.config, "--data-dir", searched.cifar, "--results-dir",
                    searched.root / "results", cwd=searched.root)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming with 5 finished" in again.stdout
    assert "--- trial" not in again.stdout and "--- finalist" not in again.stdout
    runs = sum(len(f["runs"]) for f in json.loads((study / "finalists.json").read_text())["finalists"])
    assert f"{runs} of {runs} runs done" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in before} == before


def _kill_when(args, cwd, marker, sig=signal.SIGKILL, expected_rc=-signal.SIGKILL):
    """Run the CLI and SIGKILL it (no chance to clean up) as soon as `marker` is printed."""
    env = {"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin",
           **{k: v for k, v in os.environ.items() if k == "KERAS_BACKEND"}}
    proc = subprocess.Popen([sys.executable, "-m", "alexnet_search", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            proc.send_signal(sig)
            break
    proc.wait(timeout=60)
    assert proc.returncode == expected_rc, "".join(seen)[-2000:]
    return "".join(seen)


@slow
def test_a_search_stopped_or_killed_at_any_point_resumes_with_its_trials_intact(tmp_path, cifar_dir, tiny_config):
    """One study stopped four times, then run to the end (make test's budget): SIGTERM twice in one
    trial (`kill`, `timeout` and batch schedulers stop a job so: a preemption, which must not fail
    the trial as one that keeps killing its process), then SIGKILL between two trials just after the
    state was saved, then SIGKILL while a trial builds and trains (no chance to clean up)."""
    args = ["search", "--config", tiny_config, "--data-dir", cifar_dir, "--results-dir", tmp_path / "results"]
    tuner_dir = tmp_path / "results/tiny/tuner"
    kept, outs = {}, []
    stops = [("--- trial 2/5", signal.SIGTERM, 130, 1), ("--- trial 2/5", signal.SIGTERM, 130, 1),
             ("trial 3/5 done", signal.SIGKILL, -signal.SIGKILL, 3), ("--- trial 4/5", signal.SIGKILL, -signal.SIGKILL, 3),
             (None, None, 0, 5)]
    for marker, sig, rc, finished in stops:
        if marker is None:
            again = run_cli(*args, cwd=tmp_path)
            assert again.returncode == 0, again.stderr[-3000:]
            outs.append(again.stdout)
        else:
            outs.append(_kill_when(args, tmp_path, marker, sig=sig, expected_rc=rc))
        now = {p.parent.name: json.loads(p.read_text()) for p in tuner_dir.glob("trial_*/trial.json")}
        assert len([t for t in now.values() if t["status"] == "COMPLETED"]) == finished, marker
        for name, trial in kept.items():  # kept exactly as they were
            assert now[name]["status"] == "COMPLETED" and now[name]["score"] == trial["score"]
            assert now[name]["hyperparameters"]["values"] == trial["hyperparameters"]["values"]
        kept = {k: v for k, v in now.items() if v["status"] == "COMPLETED"}
    assert all("resuming with 1 finished" in out for out in outs[1:3])
    assert all("resuming with 3 finished" in out for out in outs[3:])
    for k, out in [(1, o) for o in outs[1:3]] + [(k, o) for k in range(1, 4) for o in outs[3:]]:
        assert f"--- trial {k}/5" not in out  # finished trials are not run again
    ended = {p.parent.name: [r.get("ended") for r in json.loads(p.read_text())] for p in tuner_dir.glob("trial_*/runs.json")}
    assert ended["trial_0001"] == ["interrupted", "interrupted", "completed"]  # preempted twice, not failed
    assert ended["trial_0003"] == [None, "completed"]  # the SIGKILL left its run open: a crash, run again
    best = json.loads((tmp_path / "results/tiny/best_hyperparameters.json").read_text())
    assert kept[f"trial_{best['trial_id']}"]["status"] == "COMPLETED"
    runs = sorted(p.name for p in (tmp_path / "results/tiny/tensorboard").iterdir() if p.is_dir())
    assert runs == sorted(t["trial_id"] for t in kept.values())


def _search_only(searched, dest):
    """A copy of the searched study as its search left it: no confirmation, adoption, retrain,
    baseline, report or TensorBoard run. Returns `dest`."""
    import shutil

    shutil.copytree(searched.study, dest, ignore=shutil.ignore_patterns(
        "finalists*", "best*", "baselines", "runs", "report*", "tensorboard"))
    return dest


@slow
def test_a_chief_restarted_after_its_search_ended_serves_the_finalists_at_once(searched, tmp_path):
    """A chief restarted during the confirmation served the finished search again on its port and
    waited there for good, while its workers retried the finalists' port for up to an hour. The
    study was searched by one process: a chief resuming it started the search over on top of its
    trials (Keras Tuner reloads under the tuner id that saved it)."""
    import threading

    from conftest import free_port

    _search_only(searched, tmp_path / "results/tiny")
    port = free_port()
    args = ["search", "--config", searched.config, "--data-dir", searched.cifar, "--results-dir",
            tmp_path / "results", "--chief", "--oracle-port", port]
    env = {"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin",
           **{k: v for k, v in os.environ.items() if k == "KERAS_BACKEND"}}
    proc = subprocess.Popen([sys.executable, "-m", "alexnet_search", *map(str, args)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(180, proc.kill)  # the old chief never got there
    watchdog.start()
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if f"(finalists' oracle on port {port + 1})" in line:
                break
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait(timeout=60)
    out = "".join(seen)
    assert f"(finalists' oracle on port {port + 1})" in out, out[-2000:]
    assert "resuming with 5 finished" in out and "0 trials completed" not in out
    assert "search ended before this chief started: on to its finalists" in out and "serving the oracle" not in out


@slow
def test_a_confirmation_killed_mid_run_resumes_losing_only_that_run(searched, tmp_path):
    # The searched study before its confirmation: the same search, nothing confirmed or adopted.
    study = _search_only(searched, tmp_path / "results/tiny")
    args = ["search", "--config", searched.config, "--data-dir", searched.cifar, "--results-dir", tmp_path / "results"]
    _kill_when(args, tmp_path, "[finalist 2 seed 1001] epoch 1/2")  # the third of six runs, mid-way
    search_before = {p.name: p.read_bytes() for p in (study / "tuner").glob("trial_*/trial.json")}
    confirmed = json.loads((study / "finalists.json").read_text())
    assert not confirmed["finished"]
    done = {(f["trial_id"], r["seed"]): r["score"] for f in confirmed["finalists"] for r in f["runs"]
            if r["status"] == "COMPLETED"}
    assert len(done) == 2 and not (study / "best_hyperparameters.json").exists()  # nothing adopted half-way
    refused = run_cli("retrain-best", "--config", searched.config, "--data-dir", searched.cifar, "--results-dir",
                      tmp_path / "results", cwd=tmp_path)
    assert refused.returncode == 2 and "has not adopted a configuration yet" in refused.stderr

    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    out = again.stdout
    assert "2 of 7 runs done" in out and "--- trial" not in out
    for f in confirmed["finalists"]:  # finished runs are not trained again
        for seed in (seed for trial_id, seed in done if trial_id == f["trial_id"]):
            who = f"baseline {f['baseline']}" if f.get("baseline") else f"finalist {f['rank']}"
            assert f"--- {who} seed {seed}" not in out
    assert "--- finalist 2 seed 1001" in out and "--- finalist 2 seed 1002" in out
    assert "--- baseline paper seed 1002" in out
    assert {p.name: p.read_bytes() for p in (study / "tuner").glob("trial_*/trial.json")} == search_before
    confirmed = json.loads((study / "finalists.json").read_text())
    assert confirmed["finished"] and all(f["complete"] for f in confirmed["finalists"])
    assert {(f["trial_id"], r["seed"]): r["score"] for f in confirmed["finalists"] for r in f["runs"]
            if (f["trial_id"], r["seed"]) in done} == done
    runs = [json.loads(p.read_text()) for p in sorted((study / "finalists").glob("trial_*/runs.json"))]
    assert [[r.get("ended") for r in unit] for unit in runs] == [["completed"]] * 2 + [[None, "completed"]] + [
        ["completed"]] * (len(runs) - 3)  # the killed run started twice, the rest (the race's too) once
    # Retrains are deterministic per seed: the same runs as the uninterrupted study's.
    original = json.loads((searched.study / "finalists.json").read_text())
    assert confirmed["finalists"] == original["finalists"]
    assert json.loads((study / "best_hyperparameters.json").read_text())["trial_id"] == \
        confirmed["finalists"][0]["trial_id"]


def _copy_study(searched, results, name, seed=None, scores=None, space_edit=None):
    """A copy of the searched study as another study of `results`: another study seed, other
    confirmed scores (by finalist rank; the paper's recipe is rank 0), or another search space."""
    import shutil

    target = results / name
    shutil.copytree(searched.study, target, ignore=shutil.ignore_patterns("best", "baselines", "report*"))
    identity = json.loads((target / "study.json").read_text())
    if seed is not None:
        identity["identity"]["study"]["seed"] = seed
    if space_edit:
        space_edit(identity["identity"]["space"])
    (target / "study.json").write_text(json.dumps(identity))
    if scores:
        confirmed = json.loads((target / "finalists.json").read_text())
        for f in confirmed["finalists"]:
            for run in f["runs"]:
                run["score"] = scores[f["rank"]]
            f["mean"], f["std"] = scores[f["rank"]], 0.0
        (target / "finalists.json").write_text(json.dumps(confirmed))
    return target


@slow
def test_a_second_study_of_the_preset_reuses_the_recipes_runs_and_trains_its_own_finalists(searched, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    _copy_study(searched, results, "tiny")
    first = json.loads((results / "tiny/finalists.json").read_text())
    recipe = next(f for f in first["finalists"] if f.get("baseline") == "paper")
    result = run_cli("search", "--config", searched.config, "--data-dir", searched.cifar, "--results-dir", results,
                     "--study", "tiny-s2", "--seed", 2, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for run in recipe["runs"]:
        assert f"baseline paper seed {run['seed']}: {run['score']:.4f}, reused from tiny/{run['run']} " in out
        assert f"--- baseline paper seed {run['seed']}" not in out
    assert "--- finalist 1 seed 1001" in out  # trained: its own search's
    second = json.loads((results / "tiny-s2/finalists.json").read_text())
    again = {r["seed"]: r for f in second["finalists"] if f.get("baseline") == "paper" for r in f["runs"]}
    for run in recipe["runs"]:  # (a seed the first study did not race is trained if the recipe leads here)
        assert again[run["seed"]]["score"] == run["score"] and again[run["seed"]]["reused_from"] == f"tiny/{run['run']}"
    assert second["finished"] and (results / "tiny-s2/best_hyperparameters.json").is_file()


@slow
def test_retrain_best_pools_the_finalists_of_studies_of_one_space(searched, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    # Only a finalist raced to the leader's seeds may be adopted, in a pool too: the one the study raced.
    confirmed = json.loads((searched.study / "finalists.json").read_text())
    raced = next(f["rank"] for f in confirmed["finalists"] if len(f["runs"]) >= confirmed["leader_seeds"])
    low, lower = (rank for rank in (0, 1, 2) if rank != raced)
    _copy_study(searched, results, "tiny", scores={raced: 0.30, low: 0.20, lower: 0.10})
    # Another study seed whose raced finalist was confirmed best of all: it wins the pool.
    other = _copy_study(searched, results, "tiny-s2", seed=2, scores={raced: 0.40, low: 0.25, lower: 0.10})
    winner = next(f for f in json.loads((other / "finalists.json").read_text())["finalists"] if f["rank"] == raced)
    base = ["--config", searched.config, "--data-dir", searched.cifar, "--results-dir", results]
    result = run_cli("retrain-best", *base, "--pool", "tiny-s2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"the best finalist of tiny, tiny-s2: study tiny-s2 trial {winner['trial_id']}" in result.stdout
    metrics = json.loads((results / "tiny/best/metrics.json").read_text())
    assert metrics["pool"] == ["tiny", "tiny-s2"] and metrics["trial_study"] == "tiny-s2"
    assert metrics["trial_id"] == winner["trial_id"] and metrics["confirmed_mean"] == 0.40
    hps = json.loads((results / "tiny/best/hyperparameters.json").read_text())
    assert hps == {**SEED_SCRIPT, **winner["hyperparameters"]}

    report = run_cli("report", "--config", searched.config, "--results-dir", results, "--against", "tiny-s2",
                     cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    text = (results / "tiny/report.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith(f"| `tiny-s2` {winner['trial_id']} "))
    assert "0.4000 ± 0.0000" in row and "wins the pool" in row and "retrained" in row
    assert "## Which hyperparameters matter" in text and "fANOVA" in text  # 10 trials of the two studies

    # A study of another space (or confirmed otherwise) does not compete: one line, nothing written.
    def narrower(space):
        space["dropout"]["max"] = 0.4

    _copy_study(searched, results, "tiny-other", seed=3, space_edit=narrower)
    before = (results / "tiny/best/metrics.json").read_bytes()
    refused = run_cli("retrain-best", *base, "--pool", "tiny-other", cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "--pool tiny-other: its search space, data or network differ from tiny's (in space.dropout.max)" in \
        refused.stderr
    assert (results / "tiny/best/metrics.json").read_bytes() == before


@slow
@pytest.mark.skipif(os.geteuid() == 0, reason="as root, the real-disk test below fills a real tmpfs instead")
def test_a_disk_that_fills_up_mid_trial_stops_the_study_in_one_line_and_it_resumes(tmp_path, cifar_dir, tiny_config,
                                                                                    monkeypatch, capsys):
    """Full disk while trial 0002 writes its curves: not a verdict on the trial, so it is not failed; the
    study stops with one line, and once space is back the same command completes every trial. Where
    no tmpfs can be mounted (not root), the full disk is simulated."""
    import errno

    from alexnet_search import cli, tboard

    real = tboard.Writer.write

    def write(self, summary, step=0):
        if "/0002/" in str(self.folder) + "/":
            raise OSError(errno.ENOSPC, "No space left on device", str(self.folder))
        return real(self, summary, step)

    args = ["search", "--config", str(tiny_config), "--data-dir", str(cifar_dir), "--results-dir",
            str(tmp_path / "results")]
    monkeypatch.setattr(tboard.Writer, "write", write)
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: no space left on the disk holding {tmp_path}/results/tiny (")
    assert "while writing" in err[0] and "0002" in err[0]
    assert "run the same command again: it resumes" in err[0]
    trial = tmp_path / "results/tiny/tuner/trial_0002"
    assert [r.get("ended") for r in json.loads((trial / "runs.json").read_text())] == ["interrupted"]
    monkeypatch.setattr(tboard.Writer, "write", real)
    assert cli.main(args) == 0
    trials = [json.loads(p.read_text()) for p in sorted((tmp_path / "results/tiny/tuner").glob("trial_*/trial.json"))]
    assert [t["status"] for t in trials] == ["COMPLETED"] * 5


@slow
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_real_disk_that_fills_up_stops_the_study_in_one_line_and_loses_nothing(tmp_path, cifar_dir, tiny_config):
    """A 3 MiB tmpfs holds two or three of the tiny study's five checkpoints: every write may fail
    (Keras' h5 checkpoint, TensorBoard, a state file), not the one a monkeypatch picks. The study
    stops in one line, leaves every file whole and no run counted as a crash, and a bigger disk
    completes it, keeping the trials already done."""
    import h5py

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode:  # root without CAP_SYS_ADMIN: a locked-down container
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        args = ("search", "--config", tiny_config, "--data-dir", cifar_dir, "--results-dir", disk / "results")
        full = run_cli(*args, cwd=tmp_path)
        assert full.returncode == 2, full.stdout[-2000:] + full.stderr[-2000:]
        err = full.stderr.strip().splitlines()
        # The study's folder when a trial ran out of space, the results' when a state file did.
        assert len(err) == 1 and err[0].startswith(f"error: no space left on the disk holding {disk}/results"), err
        assert "run the same command again: it resumes" in err[0]

        study = disk / "results" / "tiny"
        for path in study.rglob("*.json"):  # whole, or not there
            json.loads(path.read_text())
        assert not [p for p in study.rglob("*") if p.name.endswith(".tmp")]
        status = {p.parent.name: json.loads(p.read_text())["status"] for p in study.glob("tuner/trial_*/trial.json")}
        done = sorted(t for t, s in status.items() if s == "COMPLETED")
        assert 1 <= len(done) < 5, status
        for trial in done:  # a checkpoint a promoted trial would start from
            with h5py.File(study / "tuner" / trial / "checkpoint.weights.h5", "r") as h5:
                assert len(h5.keys()) > 0
        ended = {p.parent.name: [r.get("ended") for r in json.loads(p.read_text())]
                 for p in study.glob("tuner/trial_*/runs.json")}
        assert "interrupted" in sum(ended.values(), []) and None not in sum(ended.values(), []), ended

        subprocess.run(["mount", "-o", "remount,size=32m", str(disk)], check=True)  # space freed
        again = run_cli(*args, cwd=tmp_path)
        assert again.returncode == 0, again.stderr[-3000:]
        status = {p.parent.name: json.loads(p.read_text())["status"] for p in study.glob("tuner/trial_*/trial.json")}
        assert sorted(status.values()) == ["COMPLETED"] * 5
        runs = {p.parent.name: [r.get("ended") for r in json.loads(p.read_text())]
                for p in study.glob("tuner/trial_*/runs.json")}
        assert all(runs[trial] == ["completed"] for trial in done), runs  # kept, not trained again
        assert all(r[-1] == "completed" and None not in r for r in runs.values()), runs
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@slow
@backends
def test_retrain_best_exports_models_that_load_and_predict(searched, tmp_path):
    study = searched.study
    result = run_cli("retrain-best", "--config", searched.config, "--data-dir", searched.cifar,
                     "--results-dir", searched.root / "results", cwd=searched.root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "retrain-best 1/1" in result.stdout and "test accuracy" in result.stdout
    best = study / "best"
    metrics = json.loads((best / "metrics.json").read_text())
    for key in ("train_accuracy", "test_accuracy"):
        assert 0 <= metrics["runs"][0][key] <= 1
    for key in ("train_loss", "test_loss"):
        assert 0 < metrics["runs"][0][key] < 100  # finite: a 10-class cross-entropy starts near 2.3
    assert metrics["epochs"] == 2 and metrics["wall_time_s"] > 0 and metrics["exports_verified_on_images"] > 0
    # cpu.toml retrains on train+val: nothing held out to score or choose an epoch by.
    assert metrics["train_on"] == "train+val" and "val_accuracy" not in metrics["runs"][0]
    assert metrics["runs"][0]["kept_epoch"] == 2 and metrics["exported_seed"] == 1
    assert 0 <= metrics["test_accuracy_tta_mean"] <= 1 and metrics["exported_tta"] is True  # by default
    hps = json.loads((best / "hyperparameters.json").read_text())  # every hyperparameter trained
    adopted = json.loads((study / "best_hyperparameters.json").read_text())
    assert hps == {**SEED_SCRIPT, **adopted["hyperparameters"]}
    assert metrics["trial_id"] == adopted["trial_id"] and metrics["confirmed_mean"] == adopted["confirmed"]["mean"]
    assert (best / "config.json").is_file() and (best / "versions.json").is_file()
    # What the runs trained in, after this machine's speed gate, not only what the preset asked.
    assert json.loads((best / "config.json").read_text())["trained_with"] == _gated(searched.config)

    import keras

    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    model = keras.models.load_model(best / "model.keras")
    probs = model.predict(images, verbose=0)
    assert probs.shape == (6, 10)
    if _has_tensorflow():
        import tensorflow as tf

        serving = tf.saved_model.load(str(best / "serving"))  # kept alive: its endpoints reference its variables
        served = serving.serve(tf.constant(images)).numpy()
        np.testing.assert_allclose(served, probs, atol=1e-5)
    else:  # the one export that needs TensorFlow: skipped with a note, not an error
        assert not (best / "serving").exists()
        assert "TensorFlow is not installed, so no serving/" in result.stdout

    from PIL import Image

    Image.fromarray(images[0]).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((60, 100, 3), np.uint8)).convert("L").save(tmp_path / "b.jpg")
    predicted = run_cli("predict", "--study", "tiny", "--results-dir", searched.root / "results",
                        tmp_path / "a.png", tmp_path / "b.jpg", cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    lines = predicted.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(tmp_path / "a.png"))
    assert any(name in lines[1] for name in ("airplane", "cat", "truck", "frog", "ship", "dog", "horse", "bird",
                                             "deer", "automobile"))


@slow
@backends
def test_retrain_best_from_another_study_trains_its_values_at_this_presets_size(searched, tmp_path):
    """Search small, retrain big: the cpu study's best at paper.toml's sizes, as on a GPU."""
    bigger = tmp_path / "bigger.toml"
    bigger.write_text(f'extends = "{searched.config}"\n[data]\nimage_size = 64\n[retrain]\ntta = true\n')
    result = run_cli("retrain-best", "--config", bigger, "--study", "big", "--from", "tiny", "--data-dir",
                     searched.cifar, "--results-dir", searched.root / "results", cwd=searched.root)
    assert result.returncode == 0, result.stderr[-3000:]
    best = searched.root / "results" / "big" / "best"
    trained = json.loads((best / "hyperparameters.json").read_text())
    searched_best = json.loads((searched.study / "best_hyperparameters.json").read_text())
    assert trained == {**SEED_SCRIPT, **searched_best["hyperparameters"]}
    metrics = json.loads((best / "metrics.json").read_text())
    assert metrics["hyperparameters_from"].endswith(f"tiny/best_hyperparameters.json (trial {searched_best['trial_id']})")
    assert json.loads((best / "config.json").read_text())["data"]["image_size"] == 64
    assert "hyperparameters from" in result.stdout
    # tta = true: the export averages each image with its mirror (checked against the model in memory
    # on test images before it was written), and loads with Keras alone.
    assert metrics["exported_tta"] is True and metrics["exports_verified_on_images"] > 0
    import keras

    exported = keras.models.load_model(best / "model.keras", safe_mode=True)
    assert exported.get_layer("tta_mean") is not None


@slow
def test_retrain_best_on_the_training_split_alone_keeps_and_exports_what_validated_best(searched, tmp_path):
    """`train_on = "train"`: each run keeps its best-validating epoch, and the export is the seed
    that validated best; neither chosen on train+val, where nothing is held out (the default's
    test above)."""
    from alexnet_search.report import read_scalars

    preset = tmp_path / "on-train.toml"
    preset.write_text(f'extends = "{searched.config}"\n[retrain]\ntrain_on = "train"\n')
    results = searched.root / "results"
    result = run_cli("retrain-best", "--config", preset, "--study", "on-train", "--from", "tiny", "--seeds", "2",
                     "--data-dir", searched.cifar, "--results-dir", results, cwd=searched.root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "these runs train on both" not in result.stdout and "trained on train+val" not in result.stdout
    metrics = json.loads((results / "on-train" / "best" / "metrics.json").read_text())
    runs = {r["seed"]: r for r in metrics["runs"]}
    assert metrics["train_on"] == "train" and 0 <= metrics["val_accuracy_mean"] <= 1
    events = results / "on-train" / "tensorboard" / "retrain-best"
    for seed, run in runs.items():
        curve = [v for _, v in sorted(read_scalars(events / f"seed{seed}" / "validation", "epoch_accuracy").items())]
        assert len(curve) == 2 and run["kept_epoch"] == 1 + max(range(2), key=lambda i: (curve[i], -i))
    best = max(runs.values(), key=lambda r: (r["val_accuracy"], -r["seed"]))
    assert metrics["exported_seed"] == best["seed"]


@slow
def test_baseline_trains_a_named_set_and_the_report_compares_it(searched):
    results = searched.root / "results"
    result = run_cli("baseline", "--config", searched.config, "--name", "paper", "--data-dir", searched.cifar,
                     "--results-dir", results, cwd=searched.root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "baseline paper: lr=0.01, lr_schedule=plateau, momentum=0.9" in result.stdout
    # The preset retrains on train+val; the recipe's schedule acts on the validation loss, so it validates.
    assert "baselines/paper: its plateau schedule acts on the validation loss, so it trains on the training split" \
        in result.stdout
    folder = searched.study / "baselines" / "paper"
    trained = json.loads((folder / "hyperparameters.json").read_text())
    assert trained == {**SEED_SCRIPT, "lr": 0.01, "lr_schedule": "plateau", "momentum": 0.9, "weight_decay": 5e-4,
                       "dropout": 0.5}
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["baseline"] == "paper" and metrics["epochs"] == 2 and 0 <= metrics["test_accuracy_mean"] <= 1
    assert metrics["train_on"] == "train" and 0 <= metrics["val_accuracy_mean"] <= 1
    assert not (folder / "model.keras").exists()  # a baseline is measured, not exported
    assert list((searched.study / "tensorboard" / "baselines" / "paper").glob("seed1/*/events.out.tfevents.*"))
    assert not (searched.study / "baselines" / "seed").exists()  # --name trains only that one

    missing = run_cli("baseline", "--config", searched.config, "--name", "nosuch", "--data-dir", searched.cifar,
                      "--results-dir", results, cwd=searched.root)
    assert missing.returncode == 2 and "no baseline named nosuch" in missing.stderr
    report = run_cli("report", "--config", searched.config, "--results-dir", results, cwd=searched.root)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "| baseline paper |" in (searched.study / "report.md").read_text()


@slow
def test_a_finished_study_extends_with_its_trials_kept(searched, tmp_path):
    """keras-tuner#234: more budget for a study that looks promising, not a new one."""
    # The searched study's search, extended without a confirmation ([confirm] is not the search's).
    _search_only(searched, tmp_path / "results" / "tiny")
    args = ["--config", make_tiny_config(tmp_path), "--data-dir", searched.cifar, "--results-dir", tmp_path / "results"]
    tuner = tmp_path / "results" / "tiny" / "tuner"
    before = {p.parent.name: p.read_text() for p in tuner.glob("trial_*/trial.json")}
    assert len(before) == 5
    more = run_cli("search", *args, "--hyperband-iterations", "2", cwd=tmp_path)
    assert more.returncode == 0, more.stderr[-3000:]
    assert "extending study tiny: search.hyperband_iterations 1 -> 2" in more.stdout
    assert "resuming with 5 finished" in more.stdout and "10 trials" in more.stdout
    after = {p.parent.name: p.read_text() for p in tuner.glob("trial_*/trial.json")}
    assert len(after) == 10 and all(after[name] == text for name, text in before.items())  # untouched
    summary = json.loads((tmp_path / "results" / "tiny" / "search_summary.json").read_text())
    assert summary["finished"] and summary["trials_completed"] == 10 and summary["epochs_spent"] == 14
    again = run_cli("search", *args, cwd=tmp_path)  # back to one iteration: refused, nothing changes
    assert again.returncode == 2 and "can grow but not shrink" in again.stderr


def test_a_keras_export_from_one_backend_predicts_the_same_classes_on_the_other(tmp_path):
    """model.keras is backend-neutral: saved on TensorFlow, loaded on JAX (and back)."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("jax")
    script = """
import sys, numpy as np, keras
from alexnet_search.model import build_alexnet, compile_alexnet
from alexnet_search.space import Hyperparameters
TINY_NET = Hyperparameters(conv1_filters=8, conv2_filters=8, conv3_filters=8, conv4_filters=8, conv5_filters=8,
                           dense_units=16)
images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
if sys.argv[1] == "save":
    keras.utils.set_random_seed(3)
    model = compile_alexnet(build_alexnet(TINY_NET, image_size=32))
    model.fit(images, np.arange(16) % 10, epochs=1, verbose=0)
    model.save(sys.argv[2])
else:
    model = keras.models.load_model(sys.argv[2])
np.save(sys.argv[3], model.predict(images, verbose=0))
print(keras.backend.backend())
"""
    outputs = {}
    for backend, step in (("tensorflow", "save"), ("jax", "load")):
        out = tmp_path / f"{backend}.npy"
        result = subprocess.run([sys.executable, "-c", script, step, str(tmp_path / "m.keras"), str(out)],
                                env={"PYTHONPATH": str(REPO), "KERAS_BACKEND": backend, "PATH": "/usr/bin:/bin"},
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0 and result.stdout.strip() == backend, result.stderr[-2000:]
        outputs[backend] = np.load(out)
    np.testing.assert_allclose(outputs["jax"], outputs["tensorflow"], atol=1e-4)
    assert (outputs["jax"].argmax(1) == outputs["tensorflow"].argmax(1)).all()


@slow
def test_a_retrain_killed_mid_seed_or_mid_export_resumes_by_seed_and_keeps_the_earlier_export(searched):
    study, cwd = searched.study, searched.root
    args = ["retrain-best", "--config", searched.config, "--data-dir", searched.cifar, "--results-dir", cwd / "results"]
    first = run_cli(*args, "--seeds", "1", cwd=cwd)
    assert first.returncode == 0, first.stderr[-3000:]
    kept = (study / "best" / "metrics.json").read_text()
    events = lambda: len(list((study / "tensorboard" / "retrain-best").rglob("events.out.tfevents.*")))  # noqa: E731
    one_seed = events()
    assert one_seed > 0
    _kill_when([*args, "--seeds", "2"], cwd, "--- retrain-best 2/2")  # while seed 2 trains
    assert (study / "best" / "metrics.json").read_text() == kept
    out = _kill_when([*args, "--seeds", "2"], cwd, "retrain-best 2/2 done")  # seed 2 trained again: now exporting
    assert "1 of 2 seeds trained earlier" in out and "retrain-best 1/2" not in out  # seed 1 is not trained again
    assert (study / "best" / "metrics.json").read_text() == kept
    import keras

    keras.models.load_model(study / "best" / "model.keras")  # still whole
    again = run_cli(*args, "--seeds", "2", cwd=cwd)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 of 2 seeds trained earlier" in again.stdout and "--- retrain-best" not in again.stdout
    metrics = json.loads((study / "best" / "metrics.json").read_text())
    assert metrics["seeds"] == [1, 2] and metrics["exported_seed"] == 1  # on train+val: the first
    assert not list(study.glob(".best.staging-*"))
    # Seed 2's killed run left no second set of curves beside the one that finished.
    assert events() == 2 * one_seed


@slow
def test_bad_input_changes_nothing_on_disk(tmp_path, cifar_dir, tiny_config):
    results = tmp_path / "results"
    _one_line_error(run_cli("search", "--config", tiny_config, "--data-dir", tmp_path / "nowhere",
                            "--results-dir", results, cwd=tmp_path), "does not exist")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "data_batch_1").write_bytes((cifar_dir / "data_batch_1").read_bytes()[:5000])
    _one_line_error(run_cli("search", "--config", tiny_config, "--data-dir", broken, "--results-dir", results,
                            cwd=tmp_path), "corrupt or truncated")
    bad = tmp_path / "bad.toml"
    bad.write_text(f'extends = "{tiny_config}"\n[search]\nmax_epoch = 3\n')
    _one_line_error(run_cli("search", "--config", bad, "--data-dir", cifar_dir, "--results-dir", results,
                            cwd=tmp_path), "unknown key 'search.max_epoch'")
    assert not results.exists()


def _one_line_error(result, expected):
    assert result.returncode == 2, (result.stdout[-2000:], result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0]


@slow
def test_user_errors_are_one_line_and_exit_2(searched, tmp_path):
    results, cifar_dir, tiny_config = searched.root / "results", searched.cifar, searched.config
    other = tmp_path / "other.toml"
    other.write_text(f'extends = "{tiny_config}"\n[data]\nimage_size = 48\n')
    _one_line_error(run_cli("search", "--config", other, "--study", "tiny", "--data-dir", cifar_dir,
                            "--results-dir", results, cwd=tmp_path), "different search")
    _one_line_error(run_cli("retrain-best", "--config", other, "--study", "tiny", "--data-dir", cifar_dir,
                            "--results-dir", results, cwd=tmp_path), "in data.image_size; use that CONFIG")
    _one_line_error(run_cli("search", "--config", tiny_config, "--data-dir", tmp_path / "nowhere", "--results-dir",
                            results, cwd=tmp_path), "does not exist")
    _one_line_error(run_cli("retrain-best", "--config", tiny_config, "--study", "other", "--data-dir", cifar_dir,
                            "--results-dir", results, cwd=tmp_path), "no study at")
    _one_line_error(run_cli("retrain-best", "--config", tiny_config, "--seeds", "three", cwd=tmp_path),
                    "invalid int value: 'three'")
    _one_line_error(run_cli("predict", "--study", "other", "--results-dir", results, tmp_path / "x.png",
                            cwd=tmp_path), "no exported model")
    assert json.loads((results / "tiny" / "study.json").read_text())["preset"] == str(tiny_config)


def test_help_lists_every_subcommand_and_flag_with_text(tmp_path, capsys):
    from alexnet_search.cli import build_parser

    commands = ["search", "retrain-best", "baseline", "report", "plan", "predict", "bench", "tensorboard"]
    top = run_cli("--help", cwd=tmp_path)
    listed = re.findall(r"^    (\S+)\s", top.stdout, re.M)
    assert top.returncode == 0 and listed == commands
    for name in commands:
        with pytest.raises(SystemExit):
            build_parser().parse_args([name, "--help"])
        text = capsys.readouterr().out
        assert "--" in text and options_without_help(text) == [], name


def test_the_help_check_finds_a_flag_without_help():
    parser = argparse.ArgumentParser()
    parser.add_argument("--documented", help="says what it does")
    parser.add_argument("--bare")
    parser.add_argument("--long-option-name-that-wraps-its-help", metavar="SOMETHING_LONG", help="on the next line")
    assert options_without_help(parser.format_help()) == ["--bare"]


@slow
def test_without_a_config_the_machine_chooses_the_preset_and_says_why(tmp_path):
    # CI machines and this one have no GPU: the CPU preset, named in the first line.
    result = run_cli("plan", "--no-estimate", cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    first, second = result.stdout.splitlines()[:2]
    assert first == ("preset: tuning/cpu.toml, as no GPU is visible (tuning/paper.toml is sized for one); "
                     "--config (CONFIG=) chooses another")
    assert second.startswith("paper.toml's space at CPU size")
    assert "tuning/cpu.toml: Hyperband, max_epochs 9, factor 3, hyperband_iterations 1;" in result.stdout
    given = run_cli("plan", "--no-estimate", "--config", "tuning/paper.toml", cwd=REPO)
    assert given.returncode == 0 and not given.stdout.startswith("preset:")  # CONFIG= wins, silently


@slow
@backends
def test_plan_prints_the_schedule_and_an_estimate(tmp_path, tiny_confirmed_config):
    result = run_cli("plan", "--config", tiny_confirmed_config, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "5 trials (4 new configurations" in result.stdout and "7 epochs" in result.stdout
    assert "then the finalists: the best 2 configurations and baseline paper trained again with 2 seeds each for 2 " \
           "epochs, the best mean then with 1 more (again for each new leader): 14 epochs or more" in result.stdout
    assert "training images/s" in result.stdout and "estimated: make search" in result.stdout
    assert re.search(r"\(the search \d+s, its finalists \d+s\)", result.stdout)
    assert result.stdout.startswith("paper.toml's space at CPU size")  # the preset's description
    two = run_cli("plan", "--config", tiny_confirmed_config, "--workers", "2", cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-2000:]
    assert "--workers 2: 2 worker(s)" in two.stdout
    if "tensorflow" in two.stdout and "TF_NUM_INTRAOP_THREADS" not in os.environ:  # TensorFlow's pools are held to a worker's share; JAX has no such switch
        assert "thread(s), a worker's share" in two.stdout
    assert re.search(r"with 2 workers side by side \(the search at least \d+s: a Hyperband round waits for its last "
                     r"trial, its finalists \d+s in 4 rounds\)", two.stdout)


@slow
@backends
def test_tensorboard_serves_every_trial_in_the_hparams_dashboard(searched, tmp_path):
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"PYTHONPATH": str(REPO), "PATH": f"{REPO.parent}:{sys.executable.rsplit('/', 1)[0]}:/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, "-m", "alexnet_search", "tensorboard", "--results-dir",
                             str(searched.root / "results"), "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/data"

    def post(path, body):
        request = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(request, timeout=30).read())

    try:
        for _ in range(120):
            try:
                listing = json.loads(urllib.request.urlopen(base + "/plugins_listing", timeout=5).read())
                if listing.get("hparams", {}).get("enabled"):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("TensorBoard did not start with the HParams plugin enabled")
        experiment = post("/plugin/hparams/experiment", {"experimentName": ""})
        assert {"lr", "dropout", "conv3_filters"} <= {h["name"] for h in experiment["hparamInfos"]}
        assert {"tag": "epochs"} in [{"tag": m["name"]["tag"]} for m in experiment["metricInfos"]]
        groups = post("/plugin/hparams/session_groups", {
            "experimentName": "", "startIndex": 0, "sliceSize": 100,
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]})
        names = {group["name"] for group in groups["sessionGroups"]}
        trials = {f"000{i}" for i in range(5)}
        assert trials <= names  # every trial of the tiny study
        confirmed = json.loads((searched.study / "finalists.json").read_text())["finalists"]
        finalist_runs = {f"finalists/{f['trial_id']}/seed{r['seed']}" for f in confirmed for r in f["runs"]}
        assert len(finalist_runs) >= 7 and finalist_runs <= names  # every finalist seed, as its own session
        # ... and the retrain and baseline runs beside them (the module's earlier tests made them)
        assert names - trials - finalist_runs <= {"retrain-best/seed1", "retrain-best/seed2", "baselines/paper/seed1"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _has_tensorflow() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None
