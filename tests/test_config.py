"""config.py: presets load and merge; every bad value is one clear UserError."""

import re

import pytest

from alexnet_search.config import load_config
from alexnet_search.errors import UserError
from alexnet_search.space import SEED_SCRIPT
from alexnet_search.study import search_identity

from conftest import REPO



def test_presets_load_and_share_one_search_space():
    paper = load_config(REPO / "tuning" / "paper.toml")
    cpu = load_config(REPO / "tuning" / "cpu.toml")
    # cpu.toml narrows six of paper.toml's dimensions (measured at its scale), never widens one.
    narrowed = {"lr_schedule", "momentum", "lr", "nesterov", "ema", "weight_decay"}
    assert paper.space.keys() == cpu.space.keys()
    assert {n: e for n, e in paper.space.items() if n not in narrowed} == \
        {n: e for n, e in cpu.space.items() if n not in narrowed}
    for name in narrowed:
        wide, narrow = paper.space[name], cpu.space[name]
        assert wide["type"] == narrow["type"], name
        if wide["type"] == "choice":
            assert set(narrow["values"]) < set(wide["values"]), name
        else:
            assert wide["min"] <= narrow["min"] < narrow["max"] <= wide["max"], name
    # A search starts from the seed's values, except where the range left the seed's value out.
    for name, entry in paper.space.items():
        seed_in_range = SEED_SCRIPT[name] in entry["values"] if entry["type"] == "choice" else \
            entry["min"] <= SEED_SCRIPT[name] <= entry["max"]
        assert entry["default"] == SEED_SCRIPT[name] or not seed_in_range or name == "lr", name
    for variant in ("cpu-random", "cpu-bayesian", "cpu-budget3", "cpu-quick"):
        assert load_config(REPO / "tuning" / f"{variant}.toml").space == cpu.space
    # paper.toml is the seed's scale, which its results are compared with: a fifth of CIFAR-10 at
    # 128x128, retrained for the seed's 64 epochs.
    assert paper["data"]["image_size"] == 128 and paper["retrain"]["epochs"] == 64
    assert paper["data"]["train_size"] == 10000
    assert paper.name == "paper" and cpu.name == "cpu"


def test_every_preset_key_has_a_comment_saying_why():
    """Plain keys need a comment right above them; a [space.*] table needs one right below its header."""
    for preset in (REPO / "tuning").glob("*.toml"):
        lines = [line.strip() for line in preset.read_text().splitlines()]
        section = ""
        for i, line in enumerate(lines):
            if line.startswith("["):
                section = line
                if section.startswith(("[space.", "[baselines.")):
                    assert lines[i + 1].startswith("#"), f"{preset.name}:{i + 1}: {section} has no comment"
            elif "=" in line and not line.startswith("#") and not section.startswith(("[space.", "[baselines.")):
                assert lines[i - 1].startswith("#"), f"{preset.name}:{i + 1} has no comment: {line}"


def _write(tmp_path, text, name="bad.toml"):
    path = tmp_path / name
    path.write_text(f'extends = "{REPO / "tuning" / "cpu.toml"}"\n{text}\n')
    return path


@pytest.mark.parametrize("text, message", [
    ("[data]\ntrian_size = 5", "unknown key 'data.trian_size'"),
    ("[dat]\nx = 1", r"unknown section \[dat\]"),
    ('[data]\ntrain_size = "many"', "data.train_size = 'many' is invalid: it must be an integer from 1 to 50000"),
    ("[data]\nbatch_size = 1.5", "data.batch_size = 1.5 is invalid"),
    ("[retrain]\nepochs = 0", "retrain.epochs = 0 is invalid: it must be an integer from 1 to 10000"),
    ("[search]\nmax_epochs = 0", "search.max_epochs = 0 is invalid"),
    ('[retrain]\ntrain_on = "all"', "retrain.train_on = 'all' is invalid: it must be \"train\" or \"train\\+val\""),
    ("[search]\nfactor = 1", "search.factor = 1 is invalid: it must be an integer from 2 to 100"),
    ("[study]\nseed = 0", "study.seed = 0 is invalid: it must be an integer from 1 to 40000"),
    ("[data]\nimage_size = 16", "image_size >= "),
    # Upper bounds, before anything is allocated (a batch of 10 million images would be).
    ("[data]\nbatch_size = 10000000", "data.batch_size = 10000000 is invalid: it must be an integer from 1 to 8192"),
    ("[data]\nimage_size = 4096", "data.image_size = 4096 is invalid: it must be an integer from 1 to 512"),
    ("[data]\ntrain_size = 60000", "it must be an integer from 1 to 50000 \\(CIFAR-10's training images\\)"),
    ('[space.dense_units]\ntype = "choice"\nvalues = [4096, 1000000]\ndefault = 4096', "dense_units = 1000000 is out of range"),
    ('[space.lr]\ntype = "float"\nmin = 0.0\nmax = 0.1\ndefault = 0.001', "lr = 0.0 is out of range; it must be > 0"),
    ('[space.lr]\ntype = "float"\nmin = -1.0\nmax = 0.1\ndefault = 0.001', "lr = -1.0 is out of range; it must be > 0"),
    ('[space.dropout]\ntype = "float"\nmin = 0.1\nmax = 1.0\ndefault = 0.5', "dropout = 1.0 is out of range; it must be >= 0.0 and < 1.0"),
    ('[space.dropout]\ntype = "choice"\nvalues = []\ndefault = 0.5', "values must be a non-empty list"),
    ('[space.dropout]\ntype = "choice"\nvalues = [0.1]\ndefault = 0.5', "default = 0.5 is not one of values"),
    ('[space.dropout]\ntype = "float"\nmin = 0.7\nmax = 0.2\ndefault = 0.5', "min 0.7 is larger than max 0.2"),
    ('[space.dropout]\ntype = "float"\nmin = 0.2\nmax = 0.7\ndefault = 0.9', "default = 0.9 must be"),
    ('[space.dropout]\ntype = "gaussian"\ndefault = 0.5', 'use "float", "int" or "choice"'),
    ('[space.dropout]\ntype = "float"\nmin = 0.2\nmax = 0.7\ndefault = 0.5\nstepp = 0.1', "unknown key.* stepp"),
    ('[space.kernel_size]\ntype = "int"\nmin = 3\nmax = 5\ndefault = 3', "unknown hyperparameter 'kernel_size'"),
    ('[space.conv1_filters]\ntype = "float"\nmin = 1.5\nmax = 9.0\ndefault = 2.0', "must be a whole number"),
    ("[data\ntrain_size = 5", "is not valid TOML"),
    ('[space.lr_schedule]\ntype = "choice"\nvalues = ["cosine", "exponential"]\ndefault = "cosine"',
     "lr_schedule = 'exponential' is not one of constant, plateau, cosine"),
])
def test_bad_presets_give_one_clear_line(tmp_path, text, message):
    with pytest.raises(UserError, match=message) as info:
        load_config(_write(tmp_path, text))
    assert "\n" not in str(info.value)
    assert str(tmp_path) in str(info.value)  # names the file


def test_missing_file_and_extends_loop(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "nope.toml")
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(UserError, match="loops"):
        load_config(tmp_path / "a.toml")


def test_override_replaces_a_space_entry_whole(tmp_path):
    config = load_config(_write(tmp_path, '[space.momentum]\ntype = "float"\nmin = 0.0\nmax = 0.9\ndefault = 0.0'))
    assert config.space["momentum"] == {"type": "float", "min": 0.0, "max": 0.9, "default": 0.0}


def test_a_range_without_default_starts_from_the_seed_value_and_must_hold_it(tmp_path):
    config = load_config(_write(tmp_path, '[space.momentum]\ntype = "choice"\nvalues = [0.0, 0.9]'))
    assert config.space["momentum"]["default"] == 0.0  # recorded in config.json like a written one
    with pytest.raises(UserError, match="seed's momentum = 0.0 is not one of values"):
        load_config(_write(tmp_path, '[space.momentum]\ntype = "choice"\nvalues = [0.5, 0.9]'))
    with pytest.raises(UserError, match=r"seed's lr = 0.001 is outside \[0.01, 0.1\]"):
        load_config(_write(tmp_path, '[space.lr]\ntype = "float"\nmin = 0.01\nmax = 0.1'))
    assert load_config(_write(tmp_path, '[space.lr]\ntype = "float"\nmin = 0.01\nmax = 0.1\ndefault = 0.01'))


def test_the_confirmation_trains_the_retrains_epochs_unless_the_preset_says_fewer(tmp_path):
    assert load_config(REPO / "tuning" / "paper.toml")["confirm"]["epochs"] == 64  # the retrain's
    config = load_config(_write(tmp_path, "[retrain]\nepochs = 60\n[confirm]\nepochs = 30"))
    assert (config["confirm"]["epochs"], config["retrain"]["epochs"]) == (30, 60)
    # A preset shortening the retrain of one that races at a set length must say how long to race.
    with pytest.raises(UserError, match=re.escape("confirm.epochs = 30 is more than retrain.epochs = 12: the race "
                                                  "would train its contenders longer than the winner's retrain; set "
                                                  "[confirm] epochs to 12 or less")):
        load_config(_write(tmp_path, "[retrain]\nepochs = 12\n[confirm]\nepochs = 30"))
    with pytest.raises(UserError, match=re.escape("confirm.epochs = 0 is invalid: it must be an integer from 1")):
        load_config(_write(tmp_path, "[confirm]\nepochs = 0"))


def test_tuner_choice_and_an_equal_budget_by_default(tmp_path):
    cpu = load_config(REPO / "tuning" / "cpu.toml")
    assert cpu["search"]["tuner"] == "hyperband" and "max_trials" not in cpu["search"]
    random = load_config(_write(tmp_path, '[search]\ntuner = "random"'))
    assert random["search"]["max_trials"] == 75 // 9  # Hyperband's 75 epochs, in 9-epoch trials
    bayes = load_config(_write(tmp_path, '[search]\ntuner = "bayesian"\nmax_trials = 5'))
    assert bayes["search"]["max_trials"] == 5
    with pytest.raises(UserError, match='search.tuner = \'grid\' is invalid: it must be "hyperband", "bohb", "random"'):
        load_config(_write(tmp_path, '[search]\ntuner = "grid"'))


def test_command_line_overrides_are_checked_like_the_preset():
    cpu = load_config(REPO / "tuning" / "cpu.toml")
    assert cpu.with_overrides({"study": {"seed": None}}) is cpu
    second = cpu.with_overrides({"study": {"seed": 2}, "search": {"hyperband_iterations": 3}})
    assert second["study"]["seed"] == 2 and second["search"]["hyperband_iterations"] == 3
    assert search_identity(second) != search_identity(cpu) and cpu["study"]["seed"] == 1
    with pytest.raises(UserError, match="with command-line overrides: study.seed = 0 is invalid"):
        cpu.with_overrides({"study": {"seed": 0}})


def test_baselines_are_named_sets_checked_against_the_bounds(tmp_path):
    cpu = load_config(REPO / "tuning" / "cpu.toml")
    assert cpu["baselines"]["seed"] == {}
    assert cpu["baselines"]["paper"] == {"lr": 0.01, "lr_schedule": "plateau", "momentum": 0.9,
                                         "weight_decay": 5e-4, "dropout": 0.5}
    mine = load_config(_write(tmp_path, "[baselines.mine]\nlr = 0.3\nlabel_smoothing = 0.1"))
    assert mine["baselines"]["mine"] == {"lr": 0.3, "label_smoothing": 0.1} and "paper" in mine["baselines"]
    for text, message in (("[baselines.x]\nkernel = 3", "baselines.x: unknown hyperparameter 'kernel'"),
                          ("[baselines.x]\nmomentum = 1.0", "baselines.x: momentum = 1.0 is out of range"),
                          ('[baselines."a b"]\nlr = 0.1', "baseline name 'a b' must be letters")):
        with pytest.raises(UserError, match=message):
            load_config(_write(tmp_path, text))


def test_confirm_baselines_name_baselines_of_the_preset(tmp_path):
    assert load_config(REPO / "tuning" / "paper.toml")["confirm"]["baselines"] == ["paper"]
    assert load_config(_write(tmp_path, "[confirm]\nbaselines = []"))["confirm"]["baselines"] == []
    mine = load_config(_write(tmp_path, '[baselines.mine]\nlr = 0.3\n[confirm]\nbaselines = ["mine", "seed"]'))
    assert mine["confirm"]["baselines"] == ["mine", "seed"]
    for text, message in (('[confirm]\nbaselines = ["papr"]', "confirm.baselines names 'papr', which is not a "
                                                               "baseline of this preset; it has seed, paper"),
                          ('[confirm]\nbaselines = "paper"', "confirm.baselines = 'paper' is invalid: it must be a list"),
                          ('[confirm]\nbaselines = ["paper", "paper"]', "each once"),
                          ('[baselines.7]\nlr = 0.1\n[confirm]\nbaselines = ["7"]', "'7' reads as a search trial's id")):
        with pytest.raises(UserError, match=message) as info:
            load_config(_write(tmp_path, text))
        assert "\n" not in str(info.value)


def test_the_tuner_is_part_of_a_studys_identity():
    cpu = load_config(REPO / "tuning" / "cpu.toml")
    assert search_identity(cpu)["search"]["tuner"] == "hyperband"
    assert search_identity(load_config(REPO / "tuning" / "cpu-random.toml"))["search"]["tuner"] == "random"


def test_the_networks_shape_is_part_of_a_studys_identity(tmp_path):
    paper = load_config(REPO / "tuning" / "paper.toml")
    assert paper["model"]["conv1_kernel"] == 11
    assert search_identity(paper)["model"] == {"width_multiplier": 1.0, "conv1_kernel": 11, "bn_momentum": 0.9}
    five = load_config(_write(tmp_path, "[model]\nconv1_kernel = 5\nbn_momentum = 0.5"))
    assert search_identity(five)["model"]["conv1_kernel"] == 5
    assert search_identity(five)["model"]["bn_momentum"] == 0.5
    for bad in (-0.1, 1, 1.5, True):
        with pytest.raises(UserError, match=r"model.bn_momentum = .* is invalid: it must be a number in \[0, 1\)"):
            load_config(_write(tmp_path, f"[model]\nbn_momentum = {str(bad).lower()}"))
    for bad in (0, 65):
        with pytest.raises(UserError, match=f"model.conv1_kernel = {bad} is invalid: it must be an integer from 1 to 64"):
            load_config(_write(tmp_path, f"[model]\nconv1_kernel = {bad}"))
    with pytest.raises(UserError, match=r"data.image_size = 32 is too small .* 31x31 conv1.*smaller model.conv1_kernel"):
        load_config(_write(tmp_path, "[model]\nconv1_kernel = 31"))


@pytest.mark.parametrize("text, message", [
    # A trial's seed is the study seed x 100,003 + its number: past 2^32 every trial failed in numpy.
    ("[study]\nseed = 50000", "study.seed = 50000 is invalid: it must be an integer from 1 to 40000"),
    ("[search]\nmax_epochs = 100000", "search.max_epochs = 100000 is invalid: it must be an integer from 1 to 1000"),
    ("[search]\nhyperband_iterations = 1000000", "search.hyperband_iterations = 1000000 is invalid: it must be an integer from 1 to 100"),
    ("[search]\nmax_trials = 1000000000", "search.max_trials = 1000000000 is invalid: it must be an integer from 1 to 10000"),
    ("[confirm]\nseeds = 5000", "confirm.seeds = 5000 is invalid: it must be an integer from 1 to 100"),
    ("[retrain]\nepochs = 10000000", "retrain.epochs = 10000000 is invalid: it must be an integer from 1 to 10000"),
])
def test_every_count_a_preset_gives_has_a_ceiling(tmp_path, text, message):
    with pytest.raises(UserError, match=re.escape(message)):
        load_config(_write(tmp_path, text))


@pytest.mark.parametrize("args, message", [
    (["search", "--seed", "50000"], "study.seed = 50000 is invalid: it must be an integer from 1 to 40000"),
    (["search", "--hyperband-iterations", "5000"], "search.hyperband_iterations = 5000 is invalid: it must be an integer from 1 to 100"),
    (["retrain-best", "--seeds", "100000"], "--seeds: must be from 1 to 1000"),
    (["baseline", "--workers", "100000"], "--workers: must be from 1 to 256"),
])
def test_every_count_typed_has_a_ceiling_checked_before_anything_is_written(tmp_path, args, message):
    from conftest import run_cli

    result = run_cli(*args, "--config", REPO / "tuning" / "cpu.toml", "--results-dir", tmp_path / "results",
                     cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "results").exists()
