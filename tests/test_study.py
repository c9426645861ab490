"""study.py: atomic writes, provenance, and refusing to mix two searches in one study."""

import json

import pytest

from alexnet_search.config import load_config
from alexnet_search.errors import UserError
from alexnet_search.study import (
    failure_reason, prepare_search, replace_dir_atomic, restore_dir, searched_values, study_for, write_json_atomic, write_provenance,
)

from conftest import REPO


def test_atomic_json_replaces_the_file_whole_and_leaves_no_temporary_files(tmp_path):
    write_json_atomic(tmp_path / "a.json", {"x": 1})
    write_json_atomic(tmp_path / "a.json", {"x": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_write_killed_before_its_rename_leaves_the_old_file_whole(tmp_path, monkeypatch):
    """The new content reaches the file's name only by the rename: a plain open(path, "w") fails this."""
    write_json_atomic(tmp_path / "a.json", {"x": 1})

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr("os.replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic(tmp_path / "a.json", {"x": 2, "long": "y" * 100_000})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_json_keeps_the_old_file_when_writing_fails(tmp_path):
    write_json_atomic(tmp_path / "a.json", {"x": 1})
    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "a.json", {"x": object.__new__(type("Unserialisable", (), {"__str__": None}))})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_replace_dir_swaps_a_finished_folder_in(tmp_path):
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "old").write_text("old")
    (tmp_path / "staging").mkdir()
    (tmp_path / "staging" / "new").write_text("new")
    replace_dir_atomic(tmp_path / "staging", tmp_path / "best")
    assert [p.name for p in (tmp_path / "best").iterdir()] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_a_kill_between_the_two_renames_loses_no_export(tmp_path):
    # The state replace_dir_atomic leaves when killed after moving best/ aside.
    (tmp_path / ".best.old").mkdir()
    (tmp_path / ".best.old" / "model.keras").write_text("good")
    restore_dir(tmp_path / "best")
    assert (tmp_path / "best" / "model.keras").read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    (tmp_path / "staging").mkdir()
    (tmp_path / "staging" / "model.keras").write_text("new")
    (tmp_path / ".best.old").mkdir()  # a stale copy beside a live best/ is not restored over it
    replace_dir_atomic(tmp_path / "staging", tmp_path / "best")
    assert (tmp_path / "best" / "model.keras").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_provenance_records_config_and_versions(tmp_path):
    config = load_config(REPO / "tuning" / "cpu.toml")
    write_provenance(tmp_path, config)
    resolved = json.loads((tmp_path / "config.json").read_text())
    assert resolved["data"]["image_size"] == 32 and resolved["space"]["lr"]["default"] == 0.01
    versions = json.loads((tmp_path / "versions.json").read_text())
    for key in ("python", "tensorflow", "keras", "keras_tuner", "numpy", "git_commit", "device"):
        assert key in versions


def test_a_study_of_another_search_is_refused_unless_overwritten(tmp_path):
    cpu = load_config(REPO / "tuning" / "cpu.toml")
    paper = load_config(REPO / "tuning" / "paper.toml")
    study = study_for(tmp_path, "mine")
    assert prepare_search(study, cpu, overwrite=False) is False
    (study.tuner_dir).mkdir()
    assert prepare_search(study, cpu, overwrite=False) is True  # same search: resume
    with pytest.raises(UserError, match="different search .*data.image_size.*--overwrite"):
        prepare_search(study, paper, overwrite=False)
    assert json.loads(study.identity_file.read_text())["preset"].endswith("cpu.toml")  # untouched
    for left in ("baseline", "report", "best"):
        (study.root / left).mkdir()
        (study.root / left / "metrics.json").write_text("{}")
    (study.root / "report.md").write_text("old")
    assert prepare_search(study, paper, overwrite=True) is False
    # The old search's baseline and report go with it: they must not sit beside the new one.
    assert sorted(p.name for p in study.root.iterdir()) == ["study.json"]


def test_changing_policy_or_speed_switches_still_resumes(tmp_path):
    cpu = load_config(REPO / "tuning" / "cpu.toml")
    study = study_for(tmp_path, "mine")
    prepare_search(study, cpu, overwrite=False)
    study.tuner_dir.mkdir()
    cpu.data["search"]["max_consecutive_failed_trials"] = 9
    cpu.data["data"].update(parallel_map=False, prefetch=False)
    cpu.data["model"].update(jit_compile=True, precision="mixed_bfloat16")
    assert prepare_search(study, cpu, overwrite=False) is True
    cpu.data["data"]["batch_size"] = 64  # but not what a trial sees
    with pytest.raises(UserError, match="data.batch_size"):
        prepare_search(study, cpu, overwrite=False)


def test_a_hyperband_study_saved_without_its_tuner_resumes(tmp_path):
    """study.json of Hyperband studies made before the tuner joined the identity has no tuner."""
    cpu = load_config(REPO / "tuning" / "cpu.toml")
    study = study_for(tmp_path, "old")
    prepare_search(study, cpu, overwrite=False)
    study.tuner_dir.mkdir()
    saved = json.loads(study.identity_file.read_text())
    del saved["identity"]["search"]["tuner"]
    study.identity_file.write_text(json.dumps(saved))
    assert prepare_search(study, cpu, overwrite=False) is True
    with pytest.raises(UserError, match="search.tuner"):
        prepare_search(study, load_config(REPO / "tuning" / "cpu-random.toml"), overwrite=False)


def test_unwritable_results_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("a file where the results folder should be")
    with pytest.raises(UserError, match="cannot write to .*--results-dir"):
        prepare_search(study_for(blocker, "x"), load_config(REPO / "tuning" / "cpu.toml"), overwrite=False)


def test_study_names_must_be_plain_folder_names(tmp_path):
    for bad in ("", "a/b", ".hidden"):
        with pytest.raises(UserError, match="study name"):
            study_for(tmp_path, bad)


def test_hyperband_bookkeeping_is_kept_out_of_results():
    values = {"lr": 0.01, "dropout": 0.6000000000000001, "tuner/epochs": 9, "tuner/initial_epoch": 3,
              "tuner/bracket": 1, "tuner/round": 1, "tuner/trial_id": "0004"}
    assert searched_values(values) == {"lr": 0.01, "dropout": 0.6}


def test_failure_reason_is_the_last_traceback_line_without_the_class():
    message = "Traceback (most recent call last):\n  ...\nkeras_tuner.src.errors.FailedTrialError: out of memory: OOM"
    assert failure_reason(message) == "out of memory: OOM"
    assert failure_reason("ValueError: bad") == "bad"
    assert failure_reason("") == "no reason recorded"


def test_overwrite_only_ever_empties_a_folder_this_tool_made(tmp_path):
    """--results-dir ~ --study Documents --overwrite used to empty the user's Documents."""
    cpu = load_config(REPO / "tuning" / "cpu.toml")
    documents = tmp_path / "Documents"
    documents.mkdir()
    (documents / "thesis.tex").write_text("years of work")
    (documents / "photos").mkdir()
    with pytest.raises(UserError, match="--overwrite refused: .* not a study folder .*photos, thesis.tex"):
        prepare_search(study_for(tmp_path, "Documents"), cpu, overwrite=True)
    assert (documents / "thesis.tex").read_text() == "years of work" and (documents / "photos").is_dir()
    assert sorted(p.name for p in documents.iterdir()) == ["photos", "thesis.tex"]  # nothing written either

    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare_search(study_for(tmp_path, "empty"), cpu, overwrite=True) is False
    study = study_for(tmp_path, "cpu")
    prepare_search(study, cpu, overwrite=False)
    (study.root / "best").mkdir()
    (study.root / "report.md").write_text("old")
    assert prepare_search(study, cpu, overwrite=True) is False  # a study of ours: emptied and restarted
    assert [p.name for p in study.root.iterdir()] == ["study.json"]


def test_atomic_writes_make_the_rename_durable_by_syncing_the_folder(tmp_path, monkeypatch):
    import os
    import stat

    from alexnet_search import study as study_module

    synced = []
    real = os.fsync
    monkeypatch.setattr(study_module.os, "fsync", lambda fd: (synced.append(stat.S_ISDIR(os.fstat(fd).st_mode)),
                                                              real(fd))[1])
    write_json_atomic(tmp_path / "a.json", {"x": 1})
    assert synced == [False, True]  # the file's data, then the folder holding its new name
    synced.clear()
    study_module.write_text_atomic(tmp_path / "report.md", "# report")
    assert synced == [False, True] and (tmp_path / "report.md").read_text() == "# report"
    staging = tmp_path / "staging"
    staging.mkdir()
    synced.clear()
    replace_dir_atomic(staging, tmp_path / "best")
    assert synced == [True]


def test_a_damaged_study_file_is_one_readable_error(tmp_path):
    from alexnet_search.study import read_json

    (tmp_path / "search_summary.json").write_text('{"wall_time_s": 12')
    with pytest.raises(UserError, match="search_summary.json is not valid JSON .*--overwrite"):
        read_json(tmp_path / "search_summary.json")
    cpu = load_config(REPO / "tuning" / "cpu.toml")
    study = study_for(tmp_path, "s")
    study.root.mkdir()
    study.identity_file.write_text('["not", "a", "study"]')
    with pytest.raises(UserError, match="is unreadable; rerun with --overwrite"):
        prepare_search(study, cpu, overwrite=False)


def test_a_study_may_grow_its_budget_but_not_shrink_it(tmp_path):
    from alexnet_search.study import extension

    cpu = load_config(REPO / "tuning" / "cpu.toml")
    study = study_for(tmp_path, "s")
    prepare_search(study, cpu, overwrite=False)
    (study.tuner_dir).mkdir()
    assert extension(study, cpu) == []
    more = cpu.with_overrides({"search": {"hyperband_iterations": 2}})
    assert extension(study, more) == ["search.hyperband_iterations 1 -> 2"]
    assert prepare_search(study, more, overwrite=False) is True  # resumes, with its trials kept
    with pytest.raises(UserError, match="has run search.hyperband_iterations = 2; a study can grow but not shrink"):
        prepare_search(study, cpu, overwrite=False)
    with pytest.raises(UserError, match="different search"):  # more, and something else changed: refused
        prepare_search(study, more.with_overrides({"search": {"hyperband_iterations": 3}, "study": {"seed": 2}}),
                       overwrite=False)


def test_retrain_and_baselines_refuse_other_data_or_another_network_than_the_studys(tmp_path):
    from alexnet_search.study import require_same_network

    quick = load_config(REPO / "tuning" / "cpu-quick.toml")
    study = study_for(tmp_path, "s")
    require_same_network(study, quick)  # no search yet: nothing to compare
    prepare_search(study, quick, overwrite=False)
    # The search's own settings may differ: another budget, an extended study, another study seed.
    for same in (load_config(REPO / "tuning" / "cpu.toml"),
                 quick.with_overrides({"search": {"hyperband_iterations": 2}, "study": {"seed": 2}})):
        require_same_network(study, same)
    with pytest.raises(UserError, match=r"was searched with .*cpu-quick.toml, which differs from .*paper.toml in "
                                        r"data.image_size, data.train_size, model.conv1_kernel, "
                                        r"model.width_multiplier; use that CONFIG.*--from s"):
        require_same_network(study, load_config(REPO / "tuning" / "paper.toml"))
