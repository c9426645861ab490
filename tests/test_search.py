"""search.py: ranking, Hyperband bookkeeping, and the tuner's crash-safe state files."""

import json
from types import SimpleNamespace

import pytest

import keras
import keras_tuner

from alexnet_search.config import load_config
from alexnet_search.search import make_tuner, ranked_trials
from alexnet_search.trials import trial_epochs
from alexnet_search.study import STUDY_ID, study_for

from conftest import REPO, fresh_tuner


def _trial(trial_id, score, status="COMPLETED", **values):
    hp = keras_tuner.HyperParameters()
    hp.values.update(values)
    return SimpleNamespace(trial_id=trial_id, score=score, status=status, hyperparameters=hp)


def test_ranking_is_best_first_with_ties_to_the_earlier_trial():
    trials = [_trial("0003", 0.5), _trial("0001", 0.5), _trial("0002", 0.7), _trial("0004", 0.9, status="FAILED")]
    oracle = SimpleNamespace(trials={t.trial_id: t for t in trials},
                             objective=keras_tuner.Objective("val_accuracy", "max"))
    assert [t.trial_id for t in ranked_trials(oracle)] == ["0002", "0001", "0003"]
    oracle.objective = keras_tuner.Objective("val_loss", "min")
    assert [t.trial_id for t in ranked_trials(oracle)] == ["0001", "0003", "0002"]


def test_a_promoted_trial_counts_only_its_own_epochs():
    values = {"lr": 0.01, "dropout": 0.6000000000000001, "tuner/epochs": 9, "tuner/initial_epoch": 3,
              "tuner/bracket": 1, "tuner/round": 1, "tuner/trial_id": "0004"}
    assert trial_epochs(values, max_epochs=9) == 6
    assert trial_epochs({"lr": 0.01}, max_epochs=9) == 9  # a RandomSearch or Bayesian trial: the full budget


def test_tuner_state_is_keras_tuners_own_and_reloads(tmp_path):
    config = load_config(REPO / "tuning" / "cpu.toml")
    study = study_for(tmp_path, "s")
    study.root.mkdir()
    tuner = make_tuner(config, study)
    assert isinstance(tuner, keras_tuner.Hyperband)
    trial = tuner.oracle.create_trial("tuner0")
    tuner.save()
    names = {p.name for p in (study.tuner_dir).iterdir()}
    assert {"oracle.json", "tuner0.json", f"trial_{trial.trial_id}"} <= names
    again = make_tuner(config, study)
    assert list(again.oracle.trials) == [trial.trial_id]
    assert again.oracle.hyperparameters.get("lr") == 0.01  # the space, with the preset's starting values


def test_the_seed_fixes_the_sequence_of_configurations(tmp_path):
    sequences = []
    for name in ("a", "b"):
        _, _, tuner = fresh_tuner(tmp_path, name)
        sequences.append([{k: v for k, v in tuner.oracle.create_trial(f"t{i}").hyperparameters.values.items()
                           if k != STUDY_ID} for i in range(3)])  # each study's own id aside
    assert sequences[0] == sequences[1]
    assert sequences[0][0] != sequences[0][1]


def test_a_trial_that_killed_its_process_twice_fails_instead_of_running_again(tmp_path):
    import json

    from alexnet_search.runlog import CRASHED_RUNS_LIMIT

    _, study, tuner = fresh_tuner(tmp_path, "s")
    tuner.oracle.verbose = 0
    trial = tuner.oracle.create_trial(tuner.tuner_id)
    runs = study.tuner_dir / f"trial_{trial.trial_id}" / "runs.json"
    died = {"tuner_id": tuner.tuner_id, "pid": 1, "started": "earlier"}  # no "ended": its process died
    runs.write_text(json.dumps([died] * CRASHED_RUNS_LIMIT))
    tuner.on_trial_begin(trial)
    with pytest.raises(keras_tuner.errors.FailedTrialError, match=f"died in {CRASHED_RUNS_LIMIT} earlier runs"):
        tuner.run_trial(trial)
    trial.status = "FAILED"  # as Keras Tuner's _try_run_and_update_trial records it
    tuner.on_trial_end(trial)
    assert [r.get("ended") for r in json.loads(runs.read_text())] == [None] * CRASHED_RUNS_LIMIT + ["failed"]


def test_a_trials_checkpoint_is_durable_before_the_oracle_records_it_completed(tmp_path, monkeypatch):
    """A promoted trial starts from its parent's checkpoint: after a power cut a COMPLETED parent
    must not have an empty one. Durability cannot be seen without cutting the power, so this pins
    the order POSIX asks for: the checkpoint's data reaches the disk before trial.json's new state."""
    import os

    from alexnet_search import files as files_module

    _, _, tuner = fresh_tuner(tmp_path, "s")
    tuner.oracle.verbose = 0
    trial = tuner.oracle.create_trial(tuner.tuner_id)
    checkpoint = os.path.join(tuner.get_trial_dir(trial.trial_id), "checkpoint.weights.h5")
    with open(checkpoint, "wb") as f:
        f.write(b"weights")  # as Keras Tuner's SaveBestEpoch leaves it: written, never fsync'd
    synced, real = [], os.fsync
    monkeypatch.setattr(files_module.os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")),
                                                              real(fd))[1])
    tuner.oracle.update_trial(trial.trial_id, {"val_accuracy": 0.3})
    trial.status = "COMPLETED"
    tuner.on_trial_end(trial)
    state = [i for i, path in enumerate(synced) if os.path.basename(path).startswith(".trial.json.")]
    assert synced.index(checkpoint) < state[-1]
    assert json.loads(open(os.path.join(tuner.get_trial_dir(trial.trial_id), "trial.json")).read())["status"] == \
        "COMPLETED"


class _Diverge(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate.assign(1e9)


@pytest.mark.slow
def test_nan_and_out_of_memory_trials_fail_with_a_reason_and_the_search_goes_on(tmp_path, cifar_dir, tiny_config,
                                                                                 monkeypatch, capsys):
    import io
    import json

    import tensorflow as tf

    from alexnet_search.cifar import Source
    from alexnet_search.hypermodel import AlexNetHyperModel
    from alexnet_search.search import run_search
    from alexnet_search.training import Training

    import gc
    import weakref

    from tensorflow.python.framework.func_graph import FuncGraph

    real_fit = AlexNetHyperModel.fit
    calls, graphs = [], []  # graphs: weak references to the graphs each trial's fit traced

    def fit(self, hp, model, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape [128,96,30,30]")
        if len(calls) == 2:  # a real divergence, through real training, whatever the trial's schedule sets
            kwargs["callbacks"] = [*kwargs.get("callbacks", []), _Diverge()]
        before = {id(o) for o in gc.get_objects() if isinstance(o, FuncGraph)}
        try:
            return real_fit(self, hp, model, *args, **kwargs)
        finally:
            graphs.append([weakref.ref(o) for o in gc.get_objects() if isinstance(o, FuncGraph) and id(o) not in before])

    monkeypatch.setattr(AlexNetHyperModel, "fit", fit)
    out = io.StringIO()
    config = load_config(tiny_config)
    study = study_for(tmp_path / "results", "tiny")
    run_search(config, study, Training.prepare(config, Source(cifar_dir)), out=out)

    trials = {p.parent.name: json.loads(p.read_text()) for p in sorted(study.tuner_dir.glob("trial_*/trial.json"))}
    statuses = [t["status"] for t in trials.values()]
    assert statuses[:2] == ["FAILED", "FAILED"] and "COMPLETED" in statuses[2:]
    assert "out of memory: OOM when allocating" in trials["trial_0000"]["message"]
    assert "training loss" in trials["trial_0001"]["message"]
    assert "Traceback" not in capsys.readouterr().err  # Keras Tuner's own traceback print is off
    text = out.getvalue()
    assert "failed: out of memory" in text and "failed: training loss" in text
    summary = json.loads((study.root / "search_summary.json").read_text())
    assert summary["finished"] and summary["trials_failed"] == 2
    # Every trial but the last is freed, its graphs too (TensorFlow's gradient registry held them).
    assert all(graphs) and [r for trial in graphs[:-1] for r in trial if r() is not None] == []


@pytest.mark.slow
@pytest.mark.backends
def test_a_seeded_search_repeats_to_the_last_bit(tmp_path, cifar_dir, tiny_config):
    """Same preset and seed: the same configurations, and every trial's every metric identical."""
    import io
    import json

    import keras

    from alexnet_search.cifar import Source
    from alexnet_search.search import run_search
    from alexnet_search.training import Training

    path, expected = tiny_config, 5
    if keras.backend.backend() == "jax":
        # Every new model is an XLA compile (seconds on 2 cores): on JAX two one-epoch trials repeat;
        # the 5-trial Hyperband, a promoted trial's reloaded weights included, repeats on TensorFlow.
        path, expected = tmp_path / "two.toml", 2
        path.write_text(f'extends = "{tiny_config}"\n[search]\ntuner = "random"\nmax_trials = 2\nmax_epochs = 1\n')
    config = load_config(path)

    def metrics(name):
        study = study_for(tmp_path / name, "tiny")
        run_search(config, study, Training.prepare(config, Source(cifar_dir)), out=io.StringIO())
        trials = [json.loads(p.read_text()) for p in sorted(study.tuner_dir.glob("trial_*/trial.json"))]
        # Each study's own id aside: two studies, two ids (a worker tells them apart by it).
        return [({k: v for k, v in t["hyperparameters"]["values"].items() if k != STUDY_ID}, t["metrics"], t["status"])
                for t in trials]

    first = metrics("a")
    assert len(first) == expected and all(status == "COMPLETED" for _, _, status in first)
    assert first == metrics("b")


@pytest.mark.slow
@pytest.mark.parametrize("tuner", ["random", "bayesian"])
def test_random_and_bayesian_studies_train_max_trials_full_length_trials(tmp_path, cifar_dir, tiny_config, tuner):
    """In this process: the CLI's search is run_search, and its subprocess costs a TensorFlow import."""
    import io

    from alexnet_search.cifar import Source
    from alexnet_search.report import read_scalars, write_report
    from alexnet_search.search import run_search
    from alexnet_search.training import Training

    preset = tmp_path / "random.toml"
    # Bayesian: one random configuration, then the Gaussian process proposes the second.
    extra = "initial_points = 1\n" if tuner == "bayesian" else ""
    preset.write_text(f'extends = "{tiny_config}"\n[search]\ntuner = "{tuner}"\nmax_trials = 2\n{extra}')
    study, out = study_for(tmp_path / "results", "random"), io.StringIO()
    run_search(load_config(preset), study, Training.prepare(load_config(preset), Source(cifar_dir)), out=out)
    trials = [json.loads(p.read_text()) for p in sorted(study.tuner_dir.glob("trial_*/trial.json"))]
    assert [t["status"] for t in trials] == ["COMPLETED", "COMPLETED"]
    for t in trials:  # max_epochs (2) each, logged per epoch
        run = study.root / "tensorboard" / t["trial_id"] / "execution0" / "validation"
        assert sorted(read_scalars(run, "epoch_accuracy")) == [0, 1]
    assert "trial 2/2" in out.getvalue() and "bracket" not in out.getvalue()
    summary = json.loads((study.root / "search_summary.json").read_text())
    assert (summary["trials_scheduled"], summary["epochs_scheduled"], summary["epochs_spent"]) == (2, 4, 4)
    text = write_report(study).read_text()
    assert f"{'Random search' if tuner == 'random' else 'Bayesian optimisation'} with" in text
    assert "Too few trials" not in text


def test_a_trial_id_that_would_leave_the_study_folder_is_refused(tmp_path):
    """A worker takes trial ids from the chief's unauthenticated port and deletes folders by them."""
    from alexnet_search.errors import UserError

    config, study, tuner = fresh_tuner(tmp_path, "s")
    outside = tmp_path / "outside"
    (outside / "execution0").mkdir(parents=True)
    bad = keras_tuner.engine.trial.Trial(keras_tuner.HyperParameters(), trial_id="../../outside")
    with pytest.raises(UserError, match="trial id '../../outside'.* not one Keras Tuner makes"):
        tuner.on_trial_begin(bad)
    assert (outside / "execution0").is_dir()  # not deleted as a stale TensorBoard run
    assert not list(study.tuner_dir.glob("trial_*"))


def test_the_best_trials_table_keeps_each_value_under_its_name_in_a_resumed_study():
    from alexnet_search.search import best_trials_table

    # A trial reloaded from trial.json has its values sorted by name; one made since, as declared.
    trials = [_trial("0001", 0.6, dropout=0.3, lr=0.05, momentum=0.9),
              _trial("0002", 0.5, momentum=0.5, lr=0.002, dropout=0.2)]
    oracle = SimpleNamespace(trials={t.trial_id: t for t in trials},
                             objective=keras_tuner.Objective("val_accuracy", "max"))
    space = {"lr": {}, "dropout": {}, "momentum": {}}
    tuner = SimpleNamespace(oracle=oracle, hypermodel=SimpleNamespace(space=space), max_epochs=9)
    header, first, second = [line.split() for line in best_trials_table(tuner).splitlines()]
    assert header == ["trial", "val_accuracy", "epochs", "lr", "dropout", "momentum"]
    assert first == ["0001", "0.6000", "9", "0.05", "0.3", "0.9"]
    assert second == ["0002", "0.5000", "9", "0.002", "0.2", "0.5"]
