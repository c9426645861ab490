"""retrain.py: the epoch a retrain keeps, and its runs' plan. The full retrain-best/baseline runs
are in test_cli.py."""

import json
import math

import pytest

from alexnet_search.evaluation import kept_epoch


def test_the_kept_epoch_is_the_best_validation_epoch_not_the_last():
    assert kept_epoch({"val_accuracy": [0.3, 0.6, 0.5, 0.6]}, "val_accuracy") == 2  # the first of a tie


def test_for_a_loss_lower_is_better_and_non_finite_epochs_never_win():
    assert kept_epoch({"val_loss": [2.0, math.nan, 1.2, 1.5]}, "val_loss") == 3
    assert kept_epoch({"val_loss": [math.nan, math.inf]}, "val_loss") is None


def test_a_retrain_resumes_the_runs_of_its_own_setup_only(tmp_path, tiny_config, cifar_dir):
    """Fewer seeds: the unstarted ones are dropped, a started one is kept on record. Another name
    (a second baseline) joins the record. Other values for a name: the runs start over, in a line,
    instead of mixing two retrains' seeds."""
    import io

    from alexnet_search.config import load_config
    from alexnet_search.cifar import source_from
    from alexnet_search.progress import Progress
    from alexnet_search.retrain import RUN, RUN_SEED, Job, _runs_tuner, hyperparameters_with
    from alexnet_search.study import study_for
    from alexnet_search.training import Training

    config = load_config(tiny_config)
    study, training = study_for(tmp_path / "results", "tiny"), Training.prepare(config, source_from(cifar_dir))
    said = []

    def tuner(seeds, **named):
        jobs = [Job(f"baselines/{name}", hyperparameters_with(config, values), tmp_path / name, False, {})
                for name, values in named.items()]
        return _runs_tuner(config, study, training, "runs/baselines", None, jobs, seeds,
                           Progress(seeds, None, out=io.StringIO()), said.append)

    first = tuner(3, paper={"dropout": 0.3})
    assert [u[RUN_SEED] for u in first.oracle.units] == [1, 2, 3]
    started = first.oracle.create_trial("tuner0")  # seed 1 starts, then the process is gone
    assert started.hyperparameters.values[RUN_SEED] == 1 and started.hyperparameters.values["dropout"] == 0.3
    first.oracle.create_trial("tuner1")
    again = tuner(1, paper={"dropout": 0.3})
    assert [u[RUN_SEED] for u in again.oracle.units] == [1, 2]  # seed 3 never started: dropped
    both = tuner(1, paper={"dropout": 0.3}, seed={"dropout": 0.5})
    assert [(u[RUN], u[RUN_SEED]) for u in both.oracle.units] == [("baselines/paper", 1), ("baselines/seed", 1),
                                                                  ("baselines/paper", 2)]
    assert len(both.oracle.trials) == 2 and not said
    other = tuner(2, paper={"dropout": 0.4})
    assert said == [f"the runs in {study.root / 'runs' / 'baselines'}/ trained other values, epochs, data or "
                    f"network; starting over"]
    assert not other.oracle.trials and [u["dropout"] for u in other.oracle.units] == [0.4, 0.4]


def test_on_train_and_val_a_run_fits_on_both_and_keeps_its_last_epoch_unless_its_schedule_needs_validation(
        tmp_path, tiny_config, cifar_dir, monkeypatch):
    """What each run hands Keras Tuner's fit (the data, the validation data, the checkpoint's
    choice of epoch), read where RetrainTuner passes it on; a setup of the other train_on is not
    resumed."""
    import io

    import keras

    from alexnet_search.config import load_config
    from alexnet_search.cifar import source_from
    from alexnet_search.engine.callbacks import BestEpochAtEnd, LastEpochAtEnd
    from alexnet_search.engine.tuner import RunTuner
    from alexnet_search.progress import Progress
    from alexnet_search.retrain import Job, _runs_tuner, hyperparameters_with
    from alexnet_search.study import study_for
    from alexnet_search.training import Training

    fits = []

    def fit(tuner, trial, train, *args, **kwargs):  # in place of training: what it was handed
        checkpoint = tuner.checkpoint(objective=tuner.oracle.objective, filepath=str(tmp_path / "w.weights.h5"))
        kind = "last" if isinstance(checkpoint, LastEpochAtEnd) else "best" if isinstance(checkpoint, BestEpochAtEnd) else "?"
        fits.append((len(train.x), kwargs.get("validation_data"), kind, checkpoint.objective.name))
        tuner._model = None
        return [keras.callbacks.History()]

    monkeypatch.setattr(RunTuner, "run_trial", fit)
    monkeypatch.setattr("alexnet_search.retrain.evaluate", lambda *args, **kwargs: {})
    study, source, said = study_for(tmp_path / "results", "tiny"), source_from(cifar_dir), []
    expected = {"train": [(256, "val", "best", "val_accuracy")] * 2,
                # the plateau run still validates: its schedule acts on the validation loss
                "train+val": [(256 + 96, None, "last", "accuracy"), (256, "val", "best", "val_accuracy")]}
    for on, runs in expected.items():
        path = tmp_path / f"{on}.toml"
        path.write_text(f'extends = "{tiny_config}"\n[retrain]\ntrain_on = "{on}"\n')
        config = load_config(path)
        training = Training.prepare(config, source)
        jobs = [Job(f"baselines/{name}", hyperparameters_with(config, values), tmp_path / name, False, {})
                for name, values in (("pick", {"lr_schedule": "cosine"}), ("paper", {"lr_schedule": "plateau"}))]
        tuner = _runs_tuner(config, study, training, "runs/baselines", None, jobs, 1,
                            Progress(2, None, out=io.StringIO()), said.append)
        fits.clear()
        val = training.val_set()
        for i, _ in enumerate(jobs):  # one tuner id each: an id's running trial is handed to it again
            tuner.run_trial(tuner.oracle.create_trial(f"tuner{i}"), training.train_set(7), validation_data=val)
        assert [(n, "val" if v is val else v, kind, name) for n, v, kind, name in fits] == runs
        evaluations = sorted(study.root.glob("runs/baselines/trial_*/evaluation.json"))
        assert [json.loads(p.read_text())["train_on"] for p in evaluations] == \
            (["train", "train"] if on == "train" else ["train+val", "train"])
    # The second preset's plan did not resume the first's runs.
    assert said == [f"the runs in {study.root / 'runs' / 'baselines'}/ trained other values, epochs, data or "
                    f"network; starting over"]


def test_runs_planned_before_train_on_was_recorded_resume_as_runs_on_the_training_split(tmp_path, tiny_config,
                                                                                      cifar_dir):
    import io

    from alexnet_search.config import load_config
    from alexnet_search.cifar import source_from
    from alexnet_search.progress import Progress
    from alexnet_search.retrain import Job, _runs_tuner, hyperparameters_with
    from alexnet_search.study import study_for
    from alexnet_search.training import Training

    study, source, said = study_for(tmp_path / "results", "tiny"), source_from(cifar_dir), []

    def tuner(on):
        path = tmp_path / f"{on}.toml"
        path.write_text(f'extends = "{tiny_config}"\n[retrain]\ntrain_on = "{on}"\n')
        config = load_config(path)
        job = Job("baselines/paper", hyperparameters_with(config, {"dropout": 0.3}), tmp_path / "paper", False, {})
        return _runs_tuner(config, study, Training.prepare(config, source), "runs/baselines", None, [job], 1,
                           Progress(1, None, out=io.StringIO()), said.append)

    tuner("train").oracle.create_trial("tuner0")
    state = study.root / "runs" / "baselines" / "oracle.json"
    saved = json.loads(state.read_text())
    del saved["setup"]["train_on"]  # as an older version wrote it
    state.write_text(json.dumps(saved))
    assert len(tuner("train").oracle.trials) == 1 and not said
    assert not tuner("train+val").oracle.trials and len(said) == 1 and "starting over" in said[0]


def _study_with_best(tmp_path, values, name="cpu"):
    import json

    folder = tmp_path / "results" / name
    folder.mkdir(parents=True)
    (folder / "best_hyperparameters.json").write_text(json.dumps(
        {"trial_id": "0012", "val_accuracy": 0.5, "hyperparameters": values}))
    return folder


def test_hyperparameters_come_from_another_study_or_a_file(tmp_path, tiny_config):
    import json

    from alexnet_search.config import load_config
    from alexnet_search.adoption import hyperparameters_from

    config = load_config(tiny_config)
    folder = _study_with_best(tmp_path, {"dropout": 0.3, "lr": 0.02, "lr_schedule": "cosine"})
    values, where = hyperparameters_from("cpu", tmp_path / "results", config)
    assert values == {"dropout": 0.3, "lr": 0.02, "lr_schedule": "cosine"}
    assert where == f"{folder / 'best_hyperparameters.json'} (trial 0012)"
    flat = tmp_path / "hyperparameters.json"  # best/hyperparameters.json is a flat dict
    flat.write_text(json.dumps({"dropout": 0.4}))
    assert hyperparameters_from(str(flat), tmp_path / "results", config)[0] == {"dropout": 0.4}


def test_hyperparameters_from_elsewhere_must_be_known_and_inside_their_bounds(tmp_path, tiny_config):
    import pytest

    from alexnet_search.config import load_config
    from alexnet_search.errors import UserError
    from alexnet_search.adoption import hyperparameters_from

    config = load_config(tiny_config)
    with pytest.raises(UserError, match="no .*best_hyperparameters.json; finish that study"):
        hyperparameters_from("absent", tmp_path / "results", config)
    _study_with_best(tmp_path, {"dropout": 0.3, "kernel": 5}, name="odd")
    with pytest.raises(UserError, match="unknown hyperparameter 'kernel'"):
        hyperparameters_from("odd", tmp_path / "results", config)
    _study_with_best(tmp_path, {"momentum": 1.5}, name="wild")
    with pytest.raises(UserError, match="momentum = 1.5 is out of range; it must be >= 0.0 and < 1.0"):
        hyperparameters_from("wild", tmp_path / "results", config)
    # Outside the preset's search range but a valid model: a hand-picked value may go there.
    _study_with_best(tmp_path, {"lr": 0.5}, name="bold")
    assert hyperparameters_from("bold", tmp_path / "results", config)[0] == {"lr": 0.5}
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot read"):
        hyperparameters_from(str(tmp_path / "bad.json"), tmp_path / "results", config)
    with pytest.raises(UserError, match="invalid"):
        hyperparameters_from("../elsewhere", tmp_path / "results", config)


@pytest.mark.parametrize("name, seed", [
    ("baselines/../../../../victim", 1),  # tensorboard/baselines/../../../../victim/seed1: outside the study
    ("baselines/paper", "1/../../../../victim"),  # a seed that is a path
    ("baselines/paper", 2**40),  # a seed numpy cannot take
])
def test_a_run_the_oracle_sends_never_becomes_a_path_outside_the_study(tmp_path, tiny_config, cifar_dir, name, seed):
    """Whoever answers on the chief's port is the oracle a worker believes: the run's name and seed
    it sends became a folder that was deleted, then written, before anything checked them."""
    import io

    import keras_tuner

    from alexnet_search.config import load_config
    from alexnet_search.cifar import source_from
    from alexnet_search.errors import UserError
    from alexnet_search.progress import Progress
    from alexnet_search.retrain import RUN, RUN_SEED, RetrainTuner
    from alexnet_search.study import study_for
    from alexnet_search.training import Training

    config = load_config(tiny_config)
    study = study_for(tmp_path / "results", "tiny")
    victim = tmp_path / "victim"
    (victim / "seed1").mkdir(parents=True)
    tuner = RetrainTuner(Training.prepare(config, source_from(cifar_dir)), config, study, "runs/baselines", None, 1,
                         Progress(1, None, out=io.StringIO()))
    hp = keras_tuner.HyperParameters()
    hp.values.update({RUN: name, RUN_SEED: seed})
    with pytest.raises(UserError, match="the oracle sent trial 0"):
        tuner.on_trial_begin(keras_tuner.engine.trial.Trial(hp, trial_id="0", status="RUNNING"))
    assert (victim / "seed1").is_dir() and not (tmp_path / "results" / "tiny" / "tensorboard").exists()
