"""confirm/ and adoption.py: which configurations become finalists, which one is adopted, resuming, and pooling.

The runs here are Keras Tuner trials ended through the oracle's own calls with the scores a test
chooses; test_cli.py trains them for real (a kill in the middle, and a pool of two studies).
"""

import functools
import json
import re
from types import SimpleNamespace

import keras_tuner
import pytest

from alexnet_search.config import load_config
from alexnet_search.adoption import adopt, finalists_table, pooled_best, read_adopted
from alexnet_search.confirm.contenders import CONFIRM_SEED, baseline_units, finalist_units, reusable_baseline_runs
from alexnet_search.confirm.run import FinalistTuner, write_finalists
from alexnet_search.cifar import Source
from alexnet_search.errors import UserError
from alexnet_search.space import SEED_SCRIPT
from alexnet_search.study import prepare_search, study_for
from alexnet_search.trials import rank_finalists, searched_values
from alexnet_search.training import Training

from conftest import REPO


def _trial(trial_id, score, **values):
    hp = keras_tuner.HyperParameters()
    hp.values.update(values)
    return SimpleNamespace(trial_id=trial_id, score=score, status="COMPLETED", hyperparameters=hp)


def test_finalists_are_the_best_distinct_configurations_each_with_every_seed():
    ranked = [
        _trial("0007", 0.60, lr=0.1, dropout=0.3, **{"tuner/epochs": 9, "tuner/trial_id": "0002"}),
        _trial("0002", 0.55, lr=0.1, dropout=0.3, **{"tuner/epochs": 3}),  # its parent: the same configuration
        _trial("0004", 0.50, lr=0.01, dropout=0.5, **{"tuner/epochs": 9}),
        _trial("0001", 0.40, lr=0.2, dropout=0.0, **{"tuner/epochs": 9}),
    ]
    units = finalist_units(ranked, count=2, seeds=3, max_epochs=9)
    assert [(u["finalist/trial"], u["finalist/seed"], u["finalist/rank"]) for u in units] == [
        ("0007", 1001, 1), ("0007", 1002, 1), ("0007", 1003, 1), ("0004", 1001, 2), ("0004", 1002, 2), ("0004", 1003, 2)]
    assert units[0]["lr"] == 0.1 and units[0]["finalist/search_score"] == 0.60 and units[0]["finalist/search_epochs"] == 9
    assert not any(k.startswith("tuner/") for u in units for k in u)
    assert len(finalist_units(ranked, count=5, seeds=1, max_epochs=9)) == 3  # fewer configurations than asked


@pytest.fixture
def confirming(tmp_path, cifar_dir):
    config = load_config(REPO / "tuning" / "cpu.toml").with_overrides(
        {"data": {"train_size": 256, "val_size": 96}, "confirm": {"finalists": 3, "seeds": 2}})
    study = study_for(tmp_path / "results", "s")
    prepare_search(study, config, overwrite=False)
    training = Training.prepare(config, Source(cifar_dir))
    search = [_trial("0003", 0.62, lr=0.2, dropout=0.0), _trial("0001", 0.58, lr=0.05, dropout=0.3),
              _trial("0000", 0.50, lr=0.01, dropout=0.5)]
    units = finalist_units(search, 3, 2, config["search"]["max_epochs"])

    def tuner(planned=units):
        t = FinalistTuner(training, config, study)
        t.oracle.verbose = 0
        t.oracle.plan(planned, config["confirm"]["epochs"])
        t.save()  # as run_finalists does: reloadable from here on
        return t

    return SimpleNamespace(config=config, study=study, tuner=tuner, units=units, search=search, training=training)


def test_the_race_trains_confirm_epochs_and_the_retrain_its_own(confirming):
    # cpu.toml races for 30 epochs and retrains for 60: each run's length, and the span of its
    # learning-rate schedule, are its phase's.
    from alexnet_search.retrain import RetrainTuner

    config = confirming.config
    assert (config["confirm"]["epochs"], config["retrain"]["epochs"]) == (30, 60)
    race = FinalistTuner(confirming.training, config, confirming.study)
    retrain = RetrainTuner(confirming.training, config, confirming.study, "runs/retrain-best", None, 1, None)
    assert (race.epochs, race.hypermodel.horizon) == (30, 30)
    assert (retrain.epochs, retrain.hypermodel.horizon) == (60, 60)


def _run(oracle, score=None):
    """Take the next run from the oracle and end it: with `score`, completed; without, failed."""
    trial = oracle.create_trial("tuner0")
    if trial.status == "STOPPED":
        return None
    if score is not None:
        oracle.update_trial(trial.trial_id, {"val_accuracy": score})
        trial.status = "COMPLETED"
    else:
        trial.status, trial.message = "FAILED", "FailedTrialError: training loss diverged"
    oracle.end_trial(trial)
    v = trial.hyperparameters.values
    return v["finalist/trial"], v["finalist/seed"]


def test_the_best_confirmed_mean_is_adopted_not_the_best_search_score(confirming):
    oracle = confirming.tuner().oracle
    # Search's best (0003) confirms worst; its runner-up confirms best; 0000 has one diverged run.
    scores = {("0003", 1001): 0.60, ("0003", 1002): 0.61, ("0001", 1001): 0.66, ("0001", 1002): 0.64,
              ("0000", 1001): 0.70, ("0000", 1002): None}
    order = []
    while (ran := _run(oracle, scores.get(_peek(oracle)))) is not None:
        order.append(ran)
    assert order == list(scores)  # every planned run once, finalist by finalist
    summary = write_finalists(confirming.study, oracle, 30, finished=True)
    ranked = [(f["trial_id"], f["complete"]) for f in summary["finalists"]]
    assert ranked == [("0001", True), ("0003", True), ("0000", False)]
    assert summary["finalists"][0]["mean"] == pytest.approx(0.65)
    assert [r["status"] for r in summary["finalists"][2]["runs"]] == ["COMPLETED", "FAILED"]
    adopted = adopt(confirming.study, confirming.config, summary=summary)
    assert adopted["trial_id"] == "0001" and adopted == read_adopted(confirming.study)
    assert adopted["hyperparameters"] == {"lr": 0.05, "dropout": 0.3}
    assert adopted["confirmed"]["scores"] == [0.66, 0.64] and adopted["confirmed"]["seeds"] == [1001, 1002]
    assert json.loads(confirming.study.finalists_file.read_text()) == summary


def test_a_baseline_competes_on_every_seed_and_is_adopted_when_no_finalist_beats_it(confirming):
    config = confirming.config
    assert config["confirm"]["baselines"] == ["paper"]  # paper.toml's, inherited by cpu.toml
    units = baseline_units(config, 2)
    assert [(u["finalist/trial"], u["finalist/seed"], u["finalist/rank"], u["finalist/baseline"]) for u in units] == [
        ("paper", 1001, 0, "paper"), ("paper", 1002, 0, "paper")]
    assert all(v is not None for u in units for v in u.values())  # a chief sends them over gRPC, which has no None
    # The paper's values over the seed's, as `make baseline paper` trains them.
    assert searched_values(units[0]) == {**{k: SEED_SCRIPT[k] for k in config.space}, **config["baselines"]["paper"]}
    oracle = confirming.tuner().oracle
    oracle.plan(units, 30)
    scores = {("0003", 1001): 0.60, ("0003", 1002): 0.61, ("0001", 1001): 0.66, ("0001", 1002): 0.64,
              ("0000", 1001): 0.50, ("0000", 1002): 0.52, ("paper", 1001): 0.67, ("paper", 1002): 0.65}
    while (upcoming := _peek(oracle)) is not None:
        _run(oracle, scores[upcoming])
    summary = write_finalists(confirming.study, oracle, 30, finished=True)
    assert [f["trial_id"] for f in summary["finalists"]] == ["paper", "0001", "0003", "0000"]
    assert summary["finalists"][0]["baseline"] == "paper" and summary["finalists"][0]["search_score"] is None
    assert re.search(r"^ *s/paper +baseline +0.6700 +0.6500 +0.6600 +0.0141$", finalists_table(summary), re.M)
    adopted = adopt(confirming.study, config, summary=summary)
    assert adopted["baseline"] == "paper" and adopted["trial_id"] == "paper"
    assert adopted["hyperparameters"] == searched_values(units[0])
    assert adopted["adopted_by"] == "best mean val_accuracy of 3 finalists and baseline paper: no finalist beat " \
                                    "this baseline"
    # On an equal mean the known recipe is kept (rank 0).
    tie = {**summary, "finalists": [{**f, "mean": 0.66} if f["trial_id"] == "0001" else f for f in summary["finalists"]]}
    tie["finalists"] = rank_finalists(tie["finalists"], "max")
    assert tie["finalists"][0]["trial_id"] == "paper"


def test_a_baseline_whose_values_changed_since_it_was_planned_is_refused(confirming):
    tuner = confirming.tuner()
    tuner.oracle.plan(baseline_units(confirming.config, 2), 30)
    changed = confirming.config.with_overrides({"baselines": {"paper": {"lr": 0.02}}})
    with pytest.raises(UserError, match=r"baseline paper's values changed since .*\[baselines.paper\]"):
        tuner.oracle.plan(baseline_units(changed, 2), 30)
    assert len(tuner.oracle.units) == 8


def _peek(oracle):
    """The (finalist, seed) the oracle hands out next."""
    started = {(t.hyperparameters.values["finalist/trial"], t.hyperparameters.values["finalist/seed"])
               for t in oracle.trials.values()}
    return next(((u["finalist/trial"], u["finalist/seed"]) for u in oracle.units
                 if (u["finalist/trial"], u["finalist/seed"]) not in started), None)


def test_nothing_is_adopted_when_no_finalist_completed_all_its_runs(confirming):
    oracle = confirming.tuner().oracle
    while (upcoming := _peek(oracle)) is not None:  # every finalist's second seed diverges
        _run(oracle, None if upcoming[1] == 1002 else 0.5)
    summary = write_finalists(confirming.study, oracle, 30, finished=True)
    with pytest.raises(UserError, match="no finalist of study s completed all its runs"):
        adopt(confirming.study, confirming.config, summary=summary)
    assert not confirming.study.adopted_file.exists()
    with pytest.raises(UserError, match="has not adopted a configuration yet.*Rerun the same `make search`"):
        read_adopted(confirming.study)


def test_a_resumed_confirmation_runs_what_is_left_and_the_interrupted_run_again(confirming):
    first = confirming.tuner()
    _run(first.oracle, 0.6)
    interrupted = first.oracle.create_trial("tuner0")  # the process dies during this run
    again = confirming.tuner()  # reloaded from finalists/: the same plan, nothing handed out twice
    assert len(again.oracle.units) == 6
    retried = again.oracle.create_trial("tuner0")
    assert retried.trial_id == interrupted.trial_id  # the run in flight starts over
    again.oracle.update_trial(retried.trial_id, {"val_accuracy": 0.5})
    retried.status = "COMPLETED"
    again.oracle.end_trial(retried)
    seen = [_run(again.oracle, 0.5) for _ in range(5)]
    assert seen[-1] is None and len(set(seen[:-1])) == 4  # the four runs left, then stop
    assert len(again.oracle.trials) == 6


def test_a_larger_plan_adds_runs_and_another_epoch_count_is_refused(confirming):
    tuner = confirming.tuner()
    _run(tuner.oracle, 0.6)
    more = finalist_units([_trial("0003", 0.62, lr=0.2, dropout=0.0)], 1, 3, 27)  # a third seed for the first
    tuner.oracle.plan(more, confirming.config["confirm"]["epochs"])
    assert len(tuner.oracle.units) == 7 and tuner.oracle.units[-1]["finalist/seed"] == CONFIRM_SEED + 3
    with pytest.raises(UserError, match="confirmed at 30 epochs and \\[confirm\\] epochs \\(the retrain's unless set\\) is now 40"):
        tuner.oracle.plan(more, 40)


def _race(oracle, scores: dict, tuner_id="tuner0"):
    """Run the oracle to its end in one process, each run scored by `scores`; the runs, in order."""
    order = []
    while (trial := oracle.create_trial(tuner_id)).status != "STOPPED":
        assert trial.status == "RUNNING"  # one process: never told to wait
        v = trial.hyperparameters.values
        oracle.update_trial(trial.trial_id, {"val_accuracy": scores[(v["finalist/trial"], v["finalist/seed"])]})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
        order.append((v["finalist/trial"], v["finalist/seed"]))
    return order


BASE = {("0003", 1001): 0.70, ("0003", 1002): 0.71, ("0001", 1001): 0.70, ("0001", 1002): 0.69,
        ("0000", 1001): 0.68, ("0000", 1002): 0.69}


def test_the_leader_runs_one_more_seed_and_is_adopted_if_it_still_leads(confirming):
    tuner = confirming.tuner()
    tuner.oracle.plan(confirming.units, 30, leader_seeds=3)
    assert tuner.oracle.expected_runs() == 7
    order = _race(tuner.oracle, {**BASE, ("0003", 1003): 0.70})
    assert order == [*BASE, ("0003", 1003)]  # one run more: the leader's
    summary = write_finalists(confirming.study, tuner.oracle, 30, finished=True)
    assert summary["seeds"] == [1001, 1002] and summary["leader_seeds"] == 3  # the seeds every contender ran
    assert [(f["trial_id"], len(f["runs"])) for f in summary["finalists"]] == [("0003", 3), ("0001", 2), ("0000", 2)]
    assert re.search(r"^ *s/0000 .* 0\.6800 +0\.6900 +- +0\.6850 ", finalists_table(summary), re.M)  # not run: "-"
    adopted = adopt(confirming.study, confirming.config, summary=summary)
    assert adopted["trial_id"] == "0003" and adopted["confirmed"]["seeds"] == [1001, 1002, 1003]
    assert adopted["confirmed"]["mean"] == pytest.approx(0.70333, abs=1e-4)


def test_a_leader_that_falls_behind_on_its_extra_seed_hands_the_lead_on(confirming):
    """The paper's recipe on cpu.toml: two lucky draws, then a collapse on the third."""
    tuner = confirming.tuner()
    tuner.oracle.plan(confirming.units, 30, leader_seeds=3)
    collapse = {**BASE, ("0003", 1003): 0.60, ("0001", 1003): 0.69}
    order = _race(tuner.oracle, collapse)
    assert order == [*BASE, ("0003", 1003), ("0001", 1003)]  # 0000 (0.685) never led: not run again
    summary = write_finalists(confirming.study, tuner.oracle, 30, finished=True)
    assert [f["trial_id"] for f in summary["finalists"]] == ["0001", "0000", "0003"]
    assert adopt(confirming.study, confirming.config, summary=summary)["trial_id"] == "0001"


def test_a_race_run_interrupted_is_run_again_on_resume_and_a_finished_race_adds_nothing(confirming):
    first = confirming.tuner()
    first.oracle.plan(confirming.units, 30, leader_seeds=3)
    for key in BASE:
        _run(first.oracle, BASE[key])
    interrupted = first.oracle.create_trial("tuner0")  # the leader's third seed; the process dies in it
    assert interrupted.hyperparameters.values["finalist/seed"] == 1003
    again = confirming.tuner()  # reloaded: the race's run is part of the plan now
    again.oracle.plan(confirming.units, 30, leader_seeds=3)
    assert len(again.oracle.units) == 7
    assert _race(again.oracle, {**BASE, ("0003", 1003): 0.70}) == [("0003", 1003)]
    done = confirming.tuner().oracle
    done.plan(confirming.units, 30, leader_seeds=3)
    assert _race(done, {}) == []  # decided: a rerun of `make search` trains nothing


def test_on_workers_an_idle_worker_runs_the_next_contenders_extra_seed_and_then_waits(confirming):
    oracle = confirming.tuner().oracle
    oracle.plan(confirming.units, 30, leader_seeds=3)

    def end(trial, score):
        oracle.update_trial(trial.trial_id, {"val_accuracy": score})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)

    def key(trial):
        return trial.hyperparameters.values["finalist/trial"], trial.hyperparameters.values["finalist/seed"]

    now = [0.0]
    oracle.clock = lambda: now[0]
    for k in list(BASE)[:5]:
        _run(oracle, BASE[k])
    oracle.took = [100.0]  # a run takes 100 s here
    last = oracle.create_trial("tuner1")  # 0000 seed 1002, still training
    assert key(last) == ("0000", 1002)
    lead = oracle.create_trial("tuner2")  # meanwhile: the best settled mean, 0003
    assert key(lead) == ("0003", 1003)
    now[0] = 10
    end(last, 0.69)
    runner_up = oracle.create_trial("tuner1")  # 0001 runs beside the leader's: ready if the leader falls
    assert key(runner_up) == ("0001", 1003)
    end(runner_up, 0.69)
    assert oracle.create_trial("tuner1").status == "IDLE"  # 0000 is behind 0001's three: wait for 0003's
    end(lead, 0.70)
    assert oracle.create_trial("tuner1").status == "STOPPED"  # 0003 leads on three seeds


def _ask(oracle, tuner):
    """A worker's request: the trial, and its (finalist, seed) when it runs, else its status (IDLE, STOPPED)."""
    trial = oracle.create_trial(tuner)
    return trial, (trial.hyperparameters.values["finalist/trial"], trial.hyperparameters.values["finalist/seed"]) \
        if trial.status == "RUNNING" else trial.status


def _end(oracle, trial, score):
    oracle.update_trial(trial.trial_id, {"val_accuracy": score})
    trial.status = "COMPLETED"
    oracle.end_trial(trial)


def test_a_race_from_one_seed_runs_the_leaders_next_seeds_side_by_side_on_workers(confirming):
    """cpu.toml's confirmation: 1 seed each, then the leader up to 3. A worker that asks while the
    leader's second seed trains runs its third beside it; once the leader has all its runs, another
    contender's next. Either only while the runs that decide it were handed out less than a
    quarter of a run ago; later, the worker waits: their end is near."""
    units = finalist_units(confirming.search, 3, 1, 9)
    oracle = confirming.tuner(units).oracle
    oracle.plan(units, 30, leader_seeds=3)
    assert oracle.expected_runs() == 5
    now = [0.0]
    oracle.clock = lambda: now[0]  # every run below takes 100 s

    ask, end = functools.partial(_ask, oracle), functools.partial(_end, oracle)

    (a, ka), (b, kb) = ask("tuner1"), ask("tuner2")
    assert (ka, kb) == (("0003", 1001), ("0001", 1001))
    now[0] = 100
    end(a, 0.70)
    c, kc = ask("tuner1")
    assert kc == ("0000", 1001)  # the last planned run
    end(b, 0.71)
    d, kd = ask("tuner2")
    assert kd == ("0001", 1002)  # 0001 leads on its one seed
    now[0] = 110
    e, ke = ask("tuner3")
    assert ke == ("0001", 1003)  # the leader's third, beside its second (10 s old)
    now[0] = 115
    f, kf = ask("tuner4")
    assert kf == ("0003", 1002)  # 0001 (0.71) has all its runs, all young: 0003's next beside them
    now[0] = 200
    end(c, 0.698)
    end(d, 0.70)
    assert ask("tuner1")[1] == "IDLE"  # 0003's and 0001's runs in flight are most of the way: wait
    now[0] = 210
    end(e, 0.68)  # 0001 falls to 0.6967
    end(f, 0.71)  # 0003: 0.705 on two seeds, the lead
    g, kg = ask("tuner1")
    h, kh = ask("tuner2")
    assert (kg, kh) == (("0003", 1003), ("0000", 1002))  # 0003's last, and beside it 0000's next
    now[0] = 310
    end(g, 0.70)
    end(h, 0.69)
    assert ask("tuner1")[1] == "STOPPED"
    summary = write_finalists(confirming.study, oracle, 30, finished=True)
    assert summary["seeds"] == [1001, 1002]  # those every contender ran
    assert [(f["trial_id"], len(f["runs"])) for f in summary["finalists"]] == [("0003", 3), ("0001", 3), ("0000", 2)]
    assert adopt(confirming.study, confirming.config, summary=summary)["trial_id"] == "0003"


def test_a_worker_waits_for_a_rivals_run_about_to_end_before_the_leaders_next_seed(confirming):
    """Study seed 2's first round: the first run to end made its contender the leader, whose next
    seed took the free worker 43 s before the other contender's run ended on a better score; its
    two seeds then needed a round more. A run in its last quarter is now waited for."""
    units = finalist_units(confirming.search, 3, 1, 9)
    oracle = confirming.tuner(units).oracle
    oracle.plan(units, 30, leader_seeds=3)
    now = [0.0]
    oracle.clock = lambda: now[0]

    ask, end = functools.partial(_ask, oracle), functools.partial(_end, oracle)

    (a, _), (b, kb), (c, kc) = ask("tuner1"), ask("tuner2"), ask("tuner3")
    assert (kb, kc) == (("0001", 1001), ("0000", 1001))
    now[0] = 100
    end(a, 0.70)  # a run takes 100 s: 0001's and 0000's, as old, end within a quarter of one
    assert ask("tuner1")[1] == "IDLE"  # not 0003's second seed yet
    now[0] = 101
    end(b, 0.72)
    assert ask("tuner2")[1] == "IDLE"  # 0001 leads, but 0000's score is seconds away
    now[0] = 102
    end(c, 0.69)
    (d, kd), (e, ke) = ask("tuner1"), ask("tuner2")
    assert (kd, ke) == (("0001", 1002), ("0001", 1003))  # the leader's two seeds side by side: one round


def test_rivals_runs_this_process_did_not_see_start_are_not_waited_for(confirming):
    """A chief restarted mid-confirmation does not know when the runs in flight began, so not when
    they end: the leader's next seed goes ahead, as before the rule."""
    units = finalist_units(confirming.search, 3, 1, 9)
    oracle = confirming.tuner(units).oracle
    oracle.plan(units, 30, leader_seeds=3)
    now = [0.0]
    oracle.clock = lambda: now[0]
    first = [oracle.create_trial(f"tuner{i}") for i in (1, 2, 3)]
    now[0] = 100
    _end(oracle, first[0], 0.70)
    oracle.handed.clear()
    assert oracle.create_trial("tuner1").hyperparameters.values["finalist/seed"] == 1002


def test_a_single_run_has_no_spread(confirming):
    units = finalist_units(confirming.search, 3, 1, 9)
    oracle = confirming.tuner(units).oracle
    for score in (0.70, 0.71, 0.68):
        _run(oracle, score)
    summary = write_finalists(confirming.study, oracle, 30, finished=True)
    assert all(f["std"] is None for f in summary["finalists"])
    assert re.search(r"^ *s/0000 .* 0\.6800 +0\.6800 +-$", finalists_table(summary), re.M)


SOURCE = "/data/cifar-10-batches-py"  # where the siblings' data came from, as Source.describe says


def _sibling_with_baseline(confirming, name="first", scores=None, source=SOURCE, **changes):
    """A study beside `confirming.study` whose confirmation ran the paper's recipe: `scores` by seed."""
    config = confirming.config.with_overrides(changes) if changes else confirming.config
    sibling = study_for(confirming.study.root.parent, name)
    prepare_search(sibling, config, overwrite=False, provenance={"data_source": source})
    values = searched_values(baseline_units(config, 1)[0])
    runs = [{"seed": seed, "run": f"000{i}", "status": "COMPLETED", "score": score, "best_epoch": 30}
            for i, (seed, score) in enumerate((scores or {1001: 0.7055, 1002: 0.6390}).items())]
    sibling.finalists_file.write_text(json.dumps({
        "objective": "val_accuracy", "epochs": config["confirm"]["epochs"], "seeds": [1001], "finished": True,
        "finalists": [{"study": name, "trial_id": "paper", "baseline": "paper", "rank": 0, "search_score": None,
                       "hyperparameters": values, "complete": True, "mean": 0.7, "std": None, "runs": runs}]}))
    return sibling


def test_a_baselines_runs_in_a_sibling_study_of_the_same_training_are_reused_not_trained_again(confirming):
    _sibling_with_baseline(confirming)
    config = confirming.config
    reusable = reusable_baseline_runs(confirming.study, config, SOURCE)
    assert sorted(reusable) == [("paper", 1001), ("paper", 1002)] and reusable["paper", 1001]["from"] == "first/0000"
    oracle = confirming.tuner().oracle
    oracle.reusable = reusable
    oracle.plan(baseline_units(config, 2), 30)
    assert sorted(oracle.reused) == [("paper", 1001), ("paper", 1002)]
    assert oracle.expected_runs() == 6  # the finalists' 3 x 2: none of the recipe's
    handed = {_run(oracle, 0.6) for _ in range(6)}
    assert _run(oracle) is None and not any(trial == "paper" for trial, _ in handed)
    summary = write_finalists(confirming.study, oracle, 30, finished=True)
    paper = next(f for f in summary["finalists"] if f.get("baseline"))
    assert paper["complete"] and paper["mean"] == pytest.approx((0.7055 + 0.6390) / 2)
    assert [r["reused_from"] for r in paper["runs"]] == ["first/0000", "first/0001"]
    again = confirming.tuner().oracle  # resumed: the reused runs are part of the study's state
    assert again.reused == oracle.reused and _run(again) is None


def test_only_the_same_training_is_reused_and_the_race_reuses_a_leading_baselines_extra_seed(confirming):
    _sibling_with_baseline(confirming, "longer", confirm={"epochs": 40})
    _sibling_with_baseline(confirming, "smaller", data={"train_size": 128})
    _sibling_with_baseline(confirming, "elsewhere", source="/other/cifar-10-batches-py")
    changed = _sibling_with_baseline(confirming, "other", {1001: 0.5})
    changed.finalists_file.write_text(changed.finalists_file.read_text().replace('"dropout": 0.5', '"dropout": 0.4'))
    oracle = confirming.tuner().oracle
    oracle.reusable = reusable_baseline_runs(confirming.study, confirming.config, SOURCE)
    oracle.plan(baseline_units(confirming.config, 2), 30)
    assert oracle.reused == {}  # other epochs, other data sizes, another data folder, other values
    (confirming.study.root.parent / "other").rename(confirming.study.root.parent / "gone")
    _sibling_with_baseline(confirming, "first", {1001: 0.75, 1002: 0.75, 1003: 0.74})
    oracle = confirming.tuner().oracle
    oracle.reusable = reusable_baseline_runs(confirming.study, confirming.config, SOURCE)
    oracle.plan(baseline_units(confirming.config, 2), 30, leader_seeds=3)
    taken = []
    oracle.on_reused = taken.append
    order = _race(oracle, BASE)  # the recipe leads on its two reused seeds: its third is reused too
    assert order == list(BASE) and [(r["trial"], r["seed"]) for r in taken] == [("paper", 1003)]
    assert adopt(confirming.study, confirming.config,
                 summary=write_finalists(confirming.study, oracle, 30, finished=True))["trial_id"] == "paper"


def _confirmed(study, config, scores: dict[str, float], seeds=(1001, 1002), finished=True):
    """A study of `config` whose finalists (trial id -> score on every seed) have been confirmed."""
    prepare_search(study, config, overwrite=False)
    finalists = [{"study": study.name, "trial_id": tid, "rank": i, "search_score": 0.5, "search_epochs": 27,
                  "hyperparameters": {"lr": 0.01 * i}, "complete": True, "mean": score, "std": 0.0,
                  "runs": [{"seed": s, "status": "COMPLETED", "score": score} for s in seeds]}
                 for i, (tid, score) in enumerate(scores.items(), 1)]
    study.finalists_file.write_text(json.dumps({"objective": "val_accuracy", "epochs": 30, "seeds": list(seeds),
                                                "finished": finished, "finalists": finalists}))


def test_a_pool_of_study_seeds_adopts_the_best_finalist_of_all(tmp_path):
    config = load_config(REPO / "tuning" / "cpu.toml")
    one, two = study_for(tmp_path, "cpu"), study_for(tmp_path, "cpu-s2")
    _confirmed(one, config, {"0012": 0.66, "0003": 0.64})
    _confirmed(two, config.with_overrides({"study": {"seed": 2}}), {"0008": 0.65, "0011": 0.68})
    best, ranked = pooled_best(one, [two])
    assert (best["study"], best["trial_id"]) == ("cpu-s2", "0011")
    assert [(f["study"], f["trial_id"]) for f in ranked] == [
        ("cpu-s2", "0011"), ("cpu", "0012"), ("cpu-s2", "0008"), ("cpu", "0003")]


def test_a_pool_refuses_other_spaces_other_seeds_and_unfinished_confirmations(tmp_path):
    config = load_config(REPO / "tuning" / "cpu.toml")
    one = study_for(tmp_path, "cpu")
    _confirmed(one, config, {"0012": 0.66})
    narrower = config.with_overrides({"study": {"seed": 2}})
    narrower.space["dropout"] = {**narrower.space["dropout"], "max": 0.4}
    other_space = study_for(tmp_path, "narrow")
    _confirmed(other_space, narrower, {"0001": 0.9})
    with pytest.raises(UserError, match=r"--pool narrow: its search space, data or network differ .*space.dropout.max"):
        pooled_best(one, [other_space])
    other_size = study_for(tmp_path, "quick")
    _confirmed(other_size, load_config(REPO / "tuning" / "paper.toml"), {"0001": 0.9})
    with pytest.raises(UserError, match="--pool quick: .*differ from cpu's .*data.image_size"):
        pooled_best(one, [other_size])
    other_seeds = study_for(tmp_path, "seeds")
    _confirmed(other_seeds, config.with_overrides({"study": {"seed": 3}}), {"0001": 0.9}, seeds=(1001, 1002, 1003))
    with pytest.raises(UserError, match="--pool seeds: its finalists were confirmed .* do not compare"):
        pooled_best(one, [other_seeds])
    unfinished = study_for(tmp_path, "half")
    _confirmed(unfinished, config.with_overrides({"study": {"seed": 4}}), {"0001": 0.9}, finished=False)
    with pytest.raises(UserError, match="--pool half: its finalists' confirmation has not finished"):
        pooled_best(one, [unfinished])
    with pytest.raises(UserError, match="--pool nowhere: no study at"):
        pooled_best(one, [study_for(tmp_path, "nowhere")])
