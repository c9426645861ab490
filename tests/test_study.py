"""study.py: the study folder, provenance, and refusing to mix two searches in one study."""

import json
import subprocess
import sys

import pytest

from alexnet_search.config import load_config
from alexnet_search.errors import UserError
from alexnet_search.study import prepare_search, require_chiefs_study, study_for, write_provenance

from conftest import REPO


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
    assert prepare_search(study, cpu, overwrite=False).resuming is False
    (study.tuner_dir).mkdir()
    assert prepare_search(study, cpu, overwrite=False).resuming is True  # same search: resume
    with pytest.raises(UserError, match="different search .*data.image_size.*--overwrite"):
        prepare_search(study, paper, overwrite=False)
    assert json.loads(study.identity_file.read_text())["preset"].endswith("cpu.toml")  # untouched
    for left in ("baselines", "report", "best"):
        (study.root / left).mkdir()
        (study.root / left / "metrics.json").write_text("{}")
    (study.root / "report.md").write_text("old")
    assert prepare_search(study, paper, overwrite=True).resuming is False
    # The old search's baseline and report go with it: they must not sit beside the new one.
    assert sorted(p.name for p in study.root.iterdir()) == ["config.json", "study.json", "versions.json"]
    assert json.loads((study.root / "config.json").read_text())["data"]["image_size"] == 128  # the new preset's


def test_changing_policy_or_speed_switches_still_resumes(tmp_path):
    cpu = load_config(REPO / "tuning" / "cpu.toml")
    study = study_for(tmp_path, "mine")
    prepare_search(study, cpu, overwrite=False)
    study.tuner_dir.mkdir()
    cpu.data["search"]["max_consecutive_failed_trials"] = 9
    cpu.data["data"].update(parallel_map=False, prefetch=False)
    cpu.data["model"].update(jit_compile=True, precision="mixed_bfloat16")
    assert prepare_search(study, cpu, overwrite=False).resuming is True
    cpu.data["data"]["batch_size"] = 64  # but not what a trial sees
    with pytest.raises(UserError, match="data.batch_size"):
        prepare_search(study, cpu, overwrite=False)


def test_unwritable_results_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("a file where the results folder should be")
    with pytest.raises(UserError, match="cannot write to .*--results-dir"):
        prepare_search(study_for(blocker, "x"), load_config(REPO / "tuning" / "cpu.toml"), overwrite=False)


def test_study_names_must_be_plain_folder_names(tmp_path):
    for bad in ("", "a/b", ".hidden"):
        with pytest.raises(UserError, match="study name"):
            study_for(tmp_path, bad)


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
    assert prepare_search(study_for(tmp_path, "empty"), cpu, overwrite=True).resuming is False
    study = study_for(tmp_path, "cpu")
    prepare_search(study, cpu, overwrite=False)
    (study.root / "best").mkdir()
    (study.root / "report.md").write_text("old")
    assert prepare_search(study, cpu, overwrite=True).resuming is False  # a study of ours: emptied and restarted
    assert sorted(p.name for p in study.root.iterdir()) == ["config.json", "study.json", "versions.json"]


def test_a_damaged_study_file_is_one_readable_error(tmp_path):
    from alexnet_search.files import read_json

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
    cpu = load_config(REPO / "tuning" / "cpu.toml")
    study = study_for(tmp_path, "s")
    assert prepare_search(study, cpu, overwrite=False).extended == []
    (study.tuner_dir).mkdir()
    assert prepare_search(study, cpu, overwrite=False).extended == []
    more = cpu.with_overrides({"search": {"hyperband_iterations": 2}})
    # Resumed, with its trials kept, and the growth named.
    assert prepare_search(study, more, overwrite=False) == (True, ["search.hyperband_iterations 1 -> 2"])
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


def test_a_worker_trains_only_the_study_its_chief_prepared(tmp_path):
    cpu = load_config(REPO / "tuning" / "cpu.toml")
    study = study_for(tmp_path, "mine")
    with pytest.raises(UserError, match="study.json is missing .*same --results-dir"):
        require_chiefs_study(study, cpu)
    prepare_search(study, cpu.with_overrides({"search": {"hyperband_iterations": 2}}), overwrite=False)
    require_chiefs_study(study, cpu)  # the chief grew the budget: only the chief schedules
    with pytest.raises(UserError, match=r"differs from its chief's .*cpu.toml in study.seed; .*--seed"):
        require_chiefs_study(study, cpu.with_overrides({"study": {"seed": 2}}))
    with pytest.raises(UserError, match="differs from its chief's .* in data.image_size"):
        require_chiefs_study(study, load_config(REPO / "tuning" / "paper.toml"))
    with pytest.raises(UserError, match="this worker's \\[distributed\\] lease_s is 5, its chief's 600"):
        require_chiefs_study(study, cpu.with_overrides({"distributed": {"lease_s": 5}}))
    versions = study.root / "versions.json"
    chiefs = json.loads(versions.read_text())
    versions.write_text(json.dumps({**chiefs, "keras_tuner": "1.3.5", "python": "3.99", "device": "a GPU"}))
    # Only what trains a trial counts: another Python or device is the chief's own business.
    with pytest.raises(UserError, match=r"libraries differ from its chief's \(keras_tuner 1.3.5 there, "):
        require_chiefs_study(study, cpu)
    versions.write_text(json.dumps({**chiefs, "python": "3.99", "device": "a GPU"}))
    require_chiefs_study(study, cpu)
    versions.unlink()
    with pytest.raises(UserError, match="versions.json is missing or unreadable"):
        require_chiefs_study(study, cpu)


def test_a_worker_of_another_search_is_refused_before_keras_is_imported(tmp_path):
    """A worker checks the preset first, without Keras (seconds of import); only the libraries'
    versions need it."""
    cpu = load_config(REPO / "tuning" / "cpu.toml")
    study = study_for(tmp_path, "mine")
    prepare_search(study, cpu, overwrite=False)
    probe = ("import sys\nfrom alexnet_search.config import load_config\n"
             "from alexnet_search.study import study_for, require_chiefs_search\n"
             f"config = load_config({str(REPO / 'tuning' / 'cpu.toml')!r})\n"
             f"study = study_for({str(tmp_path)!r}, 'mine')\n"
             "require_chiefs_search(study, config)\n"
             "try:\n    require_chiefs_search(study, config.with_overrides({'study': {'seed': 2}}))\n"
             "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
             "print(sorted(m for m in ('keras', 'tensorflow', 'jax', 'keras_tuner') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert "UserError this worker's" in out and "in study.seed" in out, out
    assert out.strip().endswith("[]"), out  # nothing heavy imported


def test_a_study_id_is_made_once_kept_and_made_anew_after_overwrite(tmp_path):
    from alexnet_search.study import prepare_search, study_for

    config = load_config(REPO / "tuning" / "cpu.toml")
    study = study_for(tmp_path, "s")
    prepare_search(study, config, overwrite=False)
    assert study.read_id() is None
    made = study.make_id()
    assert study.make_id() == made == study.read_id() and len(made) == 16
    assert not [p for p in study.root.iterdir() if p.name.startswith(".study-id")]  # no staging file left
    prepare_search(study, config, overwrite=False)  # a resumed study keeps it
    assert study.read_id() == made
    prepare_search(study, config, overwrite=True)  # a study started over is another study
    assert study.read_id() is None and study.make_id() != made


def test_a_study_id_that_is_a_link_or_not_one_this_tool_makes_is_not_read(tmp_path):
    from alexnet_search.study import study_for

    study = study_for(tmp_path, "s")
    study.root.mkdir()
    (tmp_path / "elsewhere").write_text("0123456789abcdef\n")
    study.id_file.symlink_to(tmp_path / "elsewhere")
    assert study.read_id() is None
    with pytest.raises(UserError, match="is not one this tool wrote"):
        study.make_id()
    study.id_file.unlink()
    study.id_file.write_text("../../x\n")
    assert study.read_id() is None
