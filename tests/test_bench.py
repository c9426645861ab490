"""bench/: FLOP counting, the two variants' figures, the tables, the study's per-trial figures.

Behaviour only, never timings: the machine running the tests is shared and its speed unknown.
"""

import argparse
import json

import keras
import pytest

from alexnet_search import bench
from alexnet_search.bench import overhead, pipeline
from alexnet_search.config import load_config
from alexnet_search.errors import UserError
from alexnet_search.model import build_alexnet
from alexnet_search.schedule import search_schedule
from alexnet_search.space import Hyperparameters

from conftest import REPO, TINY_NET, options_without_help

CPU = str(REPO / "tuning" / "cpu-quick.toml")  # the bench's default: many short trials


def _parse(*argv):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser, parser.parse_args([str(a) for a in argv])


def test_forward_flops_of_the_seed_model_at_128():
    # conv1..conv5 + fc1, fc2, predictions at 128x128: 284.3 million multiply-adds.
    model = build_alexnet()
    assert pipeline.forward_flops(model) == pytest.approx(2 * 284.3e6, rel=0.01)
    assert pipeline.forward_flops(build_alexnet(image_size=32)) < pipeline.forward_flops(model)


def test_seed_way_model_shares_the_layer_stack_of_ours():
    ours = build_alexnet(TINY_NET, image_size=64)
    seed = pipeline.seed_model(ours, 64, Hyperparameters(), jit_compile=False)
    assert seed.input.shape[1:] == (64, 64, 3) and seed.input.dtype == "float32"
    assert seed.get_layer("conv1") is ours.get_layer("conv1") and seed.get_layer("fc2") is ours.get_layer("fc2")
    assert pipeline.forward_flops(seed) == pipeline.forward_flops(ours)
    assert any(isinstance(layer, keras.layers.RandomTranslation) for layer in seed.layers)
    assert seed.optimizer is not None


def test_upfront_resize_is_one_float_array_in_unit_range():
    import numpy as np

    x = np.full((3, 32, 32, 3), 255, np.uint8)
    out = pipeline.upfront_resize(x, 64, chunk=2)
    assert out.shape == (3, 64, 64, 3) and out.dtype == np.float32
    assert out.min() == pytest.approx(1.0) and out.max() == pytest.approx(1.0)


def test_throughput_counts_tracing_in_the_first_epoch_only_and_steady_is_a_median():
    # fit starts at 0; the first step (tracing) ends at 10, the next three one second apart.
    first, steady = pipeline.throughput(0.0, [10.0, 11.0, 12.0, 13.0], [4, 4, 4, 4], steps_per_epoch=2)
    assert first == pytest.approx(8 / 11)
    assert steady == pytest.approx(4 / 1)
    # A load spike in one step (8 s) moves the median step time, hence steady, not at all.
    assert pipeline.throughput(0.0, [10.0, 11.0, 12.0, 20.0, 21.0], [4] * 5, 5)[1] == pytest.approx(4.0)
    # A partial last batch is left out of the steady figure.
    assert pipeline.throughput(0.0, [10.0, 12.0, 12.5], [4, 4, 1], 3)[1] == pytest.approx(2.0)
    # One step only: steady falls back to the first-epoch rate rather than dividing by zero.
    assert pipeline.throughput(0.0, [2.0], [4], 1) == (2.0, 2.0)


@pytest.mark.parametrize("variant", ["seed", "ours"])
def test_a_variant_run_reports_json_ready_figures(variant):
    lines = []
    result = pipeline.measure_variant(variant, images=32, image_size=32, batch_size=16, steps=3, width=0.125,
                                   say=lines.append)
    result = json.loads(json.dumps(result))
    assert result["steps"] == 3 and result["variant"] == variant
    assert result["images_per_s"] > 0 and result["first_epoch_images_per_s"] > 0
    assert result["peak_rss_mb"] > 0 and result["matmul_gflops"] > 0 and result["forward_flops"] > 0
    assert result["data_kind"] == ("float32 32x32" if variant == "seed" else "uint8 32x32")
    assert any("training 3 steps" in line for line in lines)


def _variant(name, ips, peak, gflops=70.0):
    return {"variant": name, "images": 512, "image_size": 128, "forward_flops": 5.7e8, "matmul_gflops": gflops,
            "prep_s": 3.0 if name == "seed" else 0.0, "first_epoch_images_per_s": ips * 0.9, "images_per_s": ips,
            "start_rss_mb": 500.0, "peak_rss_mb": peak, "data_mb": 201.3 if name == "seed" else 3.1,
            "data_kind": "float32 128x128" if name == "seed" else "uint8 32x32"}


def test_table_shows_both_variants_the_ratio_and_the_ceiling():
    # The seed's process saw a loaded machine (35 GFLOP/s): its ceiling is half of ours'.
    text = pipeline.format_table(_variant("seed", 20.0, 2000.0, gflops=35.0), _variant("ours", 30.0, 800.0))
    assert pipeline.VARIANTS["seed"] in text and pipeline.VARIANTS["ours"] in text
    assert "ours/seed" in text and "1.50" in text  # the ratio column: 30 / 20
    assert "ours 40.9 images/s (70 GFLOP/s)" in text and "seed 20.5 images/s" in text  # GFLOP/s / (3 x 0.57)
    assert "98%" in text and "73%" in text  # of ceiling: 20 / 20.5 and 30 / 40.9
    assert "peak memory 0.40x" in text and "0.20x above start" in text
    assert "10,000 images" in text  # the scaling note below 10,000 images


def test_table_reports_a_failed_variant_instead_of_crashing():
    text = pipeline.format_table({"error": "exit status -9 (killed: out of memory?)"}, _variant("ours", 30.0, 800.0))
    assert "failed (exit status -9" in text and pipeline.VARIANTS["ours"] in text


def test_study_table_lists_every_trial_and_the_memory_growth():
    trials = [{"trial": i, "epochs": 1, "wall_s": 2.0, "fit_s": 1.5, "steps_s": 1.0, "first_steps_s": 0.7, "outside_fit": 0.25,
               "outside_steps": 0.5, "rss_mb": 900.0 + i} for i in range(1, 4)]
    study = {"config": "x.toml", "max_epochs": 9, "factor": 3, "iterations": 1, "scheduled_trials": 3,
             "train_size": 256, "val_size": 64, "image_size": 32, "width": 0.125, "search_s": 6.0,
             "first_step_s": 1.2, "first_step_from_process_start_s": 5.0, "outside_fit": 0.25,
             "outside_steps": 0.5, "trials": trials, "rss_end_mb": 905.0}
    text = overhead.format_study(study)
    assert "first trial's first step: 1.2s (5.0s from process start)" in text
    assert "after trial 1: 901 MB, after trial 3: 903 MB (+2 MB, +1.0 MB per trial)" in text
    assert text.count("25%") == 4  # three trials and the total
    assert "1st steps" in text and "2.1s" in text  # the total of the first (tracing) steps


def test_study_config_asks_for_enough_trials(tmp_path):
    config = load_config(overhead.study_config(CPU, tmp_path, min_trials=20))
    assert search_schedule(config["search"]).trials >= 20
    assert (config["data"]["train_size"], config["model"]["width_multiplier"]) == (256, 0.125)
    assert config.space == load_config(CPU).space  # the preset's search, only smaller
    more = load_config(overhead.study_config(CPU, tmp_path, min_trials=30))
    assert more["search"]["hyperband_iterations"] == 2
    full = load_config(overhead.study_config(CPU, tmp_path, min_trials=20, full=True))
    assert full["data"]["train_size"] == load_config(CPU)["data"]["train_size"]


def test_every_flag_has_help_and_the_steps_default_to_two_epochs():
    parser, args = _parse("--images", 96, "--batch-size", 32)
    assert options_without_help(parser.format_help()) == []
    bench._resolve(args)
    assert args.steps == 6  # two epochs of 96 images at batch 32
    with pytest.raises(UserError, match="--images must be at least 1"):
        bench._resolve(_parse("--images", 0)[1])


@pytest.mark.slow
def test_bench_runs_each_variant_in_its_own_process_and_the_backends_side_by_side(tmp_path, cifar_dir, tiny_config,
                                                                                    capsys):
    """One bench run for both checks: the variants (seed's way, ours, ours with glibc's malloc) and,
    where JAX is installed beside TensorFlow (make test's .venv), each backend's pipeline and study."""
    import importlib.util

    backends = ["tensorflow"] + (["jax"] if importlib.util.find_spec("jax") else [])
    # The tiny preset's 5-trial study: cpu-quick.toml's 23 trials on each backend took minutes here.
    _, args = _parse("--images", 32, "--image-size", 32, "--batch-size", 16, "--steps", 2, "--trials-memory", 2,
                     "--study-images", 32, "--config", tiny_config, "--data-dir", cifar_dir, "--batchnorm-steps", 2, "--output",
                     tmp_path / "bench.json", "--backends", ",".join(backends))
    assert bench.run(args) == 0
    out = capsys.readouterr().out
    phases = 3 * len(backends) + 2
    assert f"[1/{phases}] seed's way" in out and f"[2/{phases}] ours" in out and "ours/seed:" in out
    assert "ours: uint8 + numpy batches, resize in model on tensorflow, glibc's default malloc" in out
    assert "freed memory kept / glibc's default:" in out
    report = json.loads((tmp_path / "bench.json").read_text())
    for name in ("seed", "ours", "ours_glibc_malloc"):
        assert report[name]["images_per_s"] > 0 and report[name]["peak_rss_mb"] > 0
        assert report[name]["steps"] == 2 and report[name]["backend"] == "tensorflow"
        assert report[name]["page_faults_per_step"] > 0
    assert report["seed"]["forward_flops"] == report["ours"]["forward_flops"]
    assert min(report["ceiling_images_per_s"].values()) > 0
    for name in backends:
        figures = report["backends"][name]
        assert figures["ours"]["backend"] == name and figures["ours"]["images_per_s"] > 0
        # The tiny preset's whole Hyperband study (5 trials, 7 epochs), memory after every trial.
        study = figures["study"]
        trials = study["trials"]
        assert len(trials) == study["scheduled_trials"] == 5 and all(t["rss_mb"] > 0 for t in trials)
        assert sum(t["epochs"] for t in trials) == 7
        assert all(0 <= t["outside_fit"] <= t["outside_steps"] <= 1 for t in trials)
        assert sum(t["wall_s"] for t in trials) == pytest.approx(study["search_s"])
        assert 0 < study["first_step_s"] < study["search_s"]
        norm = figures["batchnorm"]
        assert norm["backend"] == name and norm["steps"] == 2 and norm["keras_step_s"] > 0 and norm["fused_step_s"] > 0
        assert norm["ratio"] == pytest.approx(norm["fused_step_s"] / norm["keras_step_s"])
        assert f"batch norm on {name} ({tiny_config}'s network, batch 16, median of 2 steps)" in out
    if len(backends) > 1:
        assert f"[{phases}/{phases}] batch norm, Keras' layer against the fused one, on jax" in out
        assert "backends (1st steps" in out
    with pytest.raises(UserError, match="--backends torch: torch not installed"):
        bench.run(_parse("--backends", "torch")[1])



def test_batchnorm_bench_times_both_layers_on_the_presets_network(tiny_config):
    from alexnet_search.bench import batchnorm

    lines = []
    result = batchnorm.measure_batchnorm(tiny_config, steps=2, batch_size=8, say=lines.append)
    assert result["steps"] == 2 and result["batch_size"] == 8 and result["image_size"] == 32
    assert result["keras_step_s"] > 0 and result["fused_step_s"] > 0
    assert result["ratio"] == pytest.approx(result["fused_step_s"] / result["keras_step_s"])
    assert "2 steps of each, in turn" in lines[0]
    assert batchnorm.format_batchnorm(result).endswith(f"{result['ratio']:.2f}x the time")
