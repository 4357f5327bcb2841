"""The CPU benchmarks' plumbing: `--set` overrides and the step benchmark (tiny, CPU)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.cpu_step import main as cpu_step_main
from benchmarks.time_to_accuracy import apply_sets
from src.errors import ParamsError
from tests.conftest import REPO, params_with


def test_set_overrides_take_yaml_values_at_dotted_keys():
    p = apply_sets(
        params_with(),
        ["model.fast_cnn.widths=[8,16,32]", "train.amp=off", "train.ema_decay=0.98", "data.classes=[cat,dog]"],
    )
    assert p.model.raw_section()["widths"] == [8, 16, 32]
    assert (p.train.amp, p.train.ema_decay, p.data.classes) == ("off", 0.98, ["cat", "dog"])
    assert p.train.lr == params_with().train.lr  # the rest stays as committed
    with pytest.raises(ParamsError, match="train.batch_size=0"):
        apply_sets(params_with(), ["train.batch_size=0"])


def test_the_step_benchmark_times_variants_and_profiles_the_first(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    small = "model.fast_cnn.widths=[8,16,16] train.batch_size=16 train.threads=1"
    cpu_step_main(
        [
            "--steps",
            "2",
            "--repeats",
            "2",
            "--profile-rows",
            "5",
            "--kernel-rows",
            "3",
            "--name",
            "t",
            "--variant",
            f"small={small}",
            "--variant",
            f"nchw={small} train.channels_last=off",
        ]
    )
    out = json.loads((tmp_path / "benchmarks/results/t.json").read_text())
    assert list(out["variants"]) == ["small", "nchw"]
    small_r = out["variants"]["small"]
    assert len(small_r["all"]) == 2 and small_r["images_per_s"] > 0 and small_r["threads"] == 1
    assert small_r["gflop_s"] == pytest.approx(small_r["gflop_per_image"] * small_r["images_per_s"])
    assert isinstance(small_r["page_faults_per_step"], float)
    assert "convolution" in small_r["profile"] and "profile" not in out["variants"]["nchw"]
    printed = capsys.readouterr().out
    assert "where the time goes (small)" in printed
    if torch.backends.mkldnn.is_available():  # oneDNN's kernels, each convolution's pass and shape
        convs = [k for k in small_r["kernels"] if k["primitive"] == "convolution"]
        assert convs and {k["pass"] for k in convs} >= {"forward", "backward weights"}
        assert "oneDNN's kernels (small" in printed and "convolutions by pass: " in printed
        assert "kernels" not in out["variants"]["nchw"]


def test_the_step_benchmark_refuses_to_time_reuse_memory_on_and_off_in_one_process():
    """Once one variant kept freed memory, an off variant in the same process would reuse it too."""
    from benchmarks.cpu_step import step_speeds

    small = {"model": {"fast_cnn": {"widths": [8, 16, 16]}}, "train": {"batch_size": 16, "threads": 1}}
    off = params_with({**small, "train": {**small["train"], "reuse_memory": False}})
    with pytest.raises(ParamsError, match="train.reuse_memory differs between the variants"):
        step_speeds([params_with(small), off], steps=1, repeats=1)


def test_the_step_benchmark_times_a_freeze_variant_with_its_stages_frozen():
    """`train.freeze_at` in a variant times the run's last phase: with all three of fast_cnn's
    stages frozen no convolution runs backward, only the head trains."""
    from benchmarks.cpu_step import step_speed

    small = {"model": {"fast_cnn": {"widths": [8, 16, 16]}}, "train": {"batch_size": 16, "threads": 1}}
    trained = step_speed(params_with(small), steps=1, repeats=1, profile_rows=40)
    small["train"]["freeze_at"] = [0.3, 0.6, 0.9]
    frozen = step_speed(params_with(small), steps=1, repeats=1, profile_rows=40)
    assert "convolution_backward" in trained["profile"]
    assert "convolution_backward" not in frozen["profile"] and "convolution" in frozen["profile"]


@pytest.mark.parametrize("normalize", ["computed", "cifar10", [[0.5, 0.4, 0.3], [0.2, 0.25, 0.3]]])
def test_the_benchmarks_normalise_as_the_stats_stage_does(small_batches, normalize):
    import torch

    from benchmarks.time_to_accuracy import subset_and_normalization
    from src.data.cifar import channel_stats, normalization
    from src.data.raw import BATCHES_DIR, load_cifar10, read_class_names

    batches = small_batches / BATCHES_DIR
    p = params_with({"data": {"classes": ["cat", "dog"], "val_per_class": 10, "normalize": normalize}})
    sub, mean, std = subset_and_normalization(p, load_cifar10(batches), read_class_names(batches))
    want = normalization(p.data, *channel_stats(sub.train_x))
    assert torch.allclose(mean, torch.tensor(want[0])) and torch.allclose(std, torch.tensor(want[1]))
    if isinstance(normalize, list):
        assert mean.tolist() == pytest.approx(normalize[0]) and std.tolist() == pytest.approx(normalize[1])


def test_the_autoaugment_benchmark_takes_real_training_steps(tmp_path, monkeypatch):
    """One notebook-recipe step per kind: the benchmark calls train_step as the training loop does."""
    import torch

    from benchmarks.autoaugment_speed import Timer, step_rates

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    rates = step_rates(1, 1, torch.device("cpu"), Timer(torch.device("cpu")))
    assert set(rates) >= {"none_images_per_s", "batched_images_per_s", "per-image_images_per_s"}
    assert all(rates[k] > 0 for k in ("none_images_per_s", "batched_images_per_s", "per-image_images_per_s"))


def test_a_run_scores_its_model_at_each_tta_fraction_asked(small_batches, tmp_path, monkeypatch):
    """`--tta-fractions`: the same trained model scored again; the evaluate stage's own fraction
    gives the run's test accuracy back, so the extra scores are comparable with it."""
    import benchmarks.time_to_accuracy as bench
    from src.data.raw import BATCHES_DIR, load_cifar10, read_class_names

    asked = []

    def noting(*args, **kw):
        asked.append(kw["tta_fraction"])
        return evaluate(*args, **kw)

    evaluate = bench.evaluate
    monkeypatch.setattr(bench, "evaluate", noting)

    batches = small_batches / BATCHES_DIR
    p = params_with(
        {
            "data": {"classes": ["cat", "dog"], "val_per_class": 10},
            "model": {"fast_cnn": {"widths": [8, 16, 16]}},
            "train": {"epochs": 1, "batch_size": 16, "threads": 1},
            "evaluate": {"tta_fraction": 0.5},
        }
    )
    out = bench.run_recipe(p, load_cifar10(batches), read_class_names(batches), None, 0, tmp_path, (0.0, 0.5, 1.0))
    assert out["device"] == "cpu"  # each run names its device; the file's machine record is the first recipe's
    assert [k for k in out if k.startswith("test_acc")] == [
        "test_acc",
        "test_acc_tta_0",
        "test_acc_tta_0.5",
        "test_acc_tta_1",
    ]
    assert asked == [0.5, 0.0, 0.5, 1.0]  # the run's own (the stage's), then each asked for
    assert out["test_acc_tta_0.5"] == out["test_acc"]
    assert all(0 <= out[k] <= 1 for k in out if k.startswith("test_acc"))


def test_seeds_runs_the_seeds_asked_and_records_each(tmp_path, monkeypatch):
    """`--seeds 1 2` adds seeds to an earlier one-seed run: each row names its seed, the medians
    are over those runs only, and --runs counts from seed 0 without it."""
    import benchmarks.time_to_accuracy as bench

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    monkeypatch.setattr(bench, "load_raw", lambda: ({}, []))
    trained = []

    def fake_run(p, raw, names, budget, seed, work, tta):
        trained.append(seed)
        keys = ("images_per_s", "seconds", "epochs", "steps", "params", "train_gflop_per_image", "achieved_gflop_s")
        return {"test_acc": 0.5 + seed / 10, **dict.fromkeys(keys, 1.0)}

    monkeypatch.setattr(bench, "run_recipe", fake_run)
    bench.main(["--classes", "cat", "dog", "--epochs", "1", "--recipes", "default", "--seeds", "1", "2", "--name", "s"])
    out = json.loads((tmp_path / "benchmarks/results/s.json").read_text())
    assert [row["seed"] for row in out["runs"]["default"]] == [1, 2]
    assert out["median"]["default"]["test_acc"] == pytest.approx(0.65)
    assert "seed" not in out["median"]["default"]
    assert trained == [1, 2]
    trained.clear()
    bench.main(["--classes", "cat", "dog", "--epochs", "1", "--recipes", "default", "--runs", "2", "--name", "r"])
    assert trained == [0, 1]


def test_a_run_trains_the_recipe_the_train_stage_would(small_batches, tmp_path):
    """run_recipe checks the recipe as the train stage does (checked_recipe): a batch larger than the
    training split is refused, not trained as a partial batch counted as a whole one."""
    import benchmarks.time_to_accuracy as bench
    from src.data.raw import BATCHES_DIR, load_cifar10, read_class_names
    from src.params import ParamsError

    batches = small_batches / BATCHES_DIR
    raw, names = load_cifar10(batches), read_class_names(batches)
    p = params_with({"data": {"classes": ["cat", "dog"], "val_per_class": 10}, "train": {"batch_size": 4096}})
    with pytest.raises(ParamsError, match="train.batch_size=4096: larger than the training split"):
        bench.run_recipe(p, raw, names, None, 0, tmp_path, ())


def _fake_main(tmp_path, monkeypatch, *args):
    import benchmarks.time_to_accuracy as bench

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    monkeypatch.setattr(bench, "load_raw", lambda: ({}, []))
    seen = []

    def fake_run(p, raw, names, budget, seed, work, tta):
        seen.append((p, work, work.parent.is_dir()))
        keys = ("images_per_s", "seconds", "epochs", "steps", "params", "train_gflop_per_image", "achieved_gflop_s")
        return {"recipe": "default", "device": "cpu", "test_acc": 0.5, **dict.fromkeys(keys, 1.0)}

    monkeypatch.setattr(bench, "run_recipe", fake_run)
    code = bench.run_cli("time_to_accuracy", bench.main, ["--classes", "cat", "dog", "--epochs", "1", *args])
    return code, seen


def test_each_run_has_a_work_folder_of_its_own_and_records_the_machine(tmp_path, monkeypatch):
    """Two benchmarks in one checkout shared .cache/bench/<recipe> and deleted each other's best.pt."""
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    code, seen = _fake_main(tmp_path, monkeypatch, "--recipes", "default", "seed", "--name", "w")
    assert code == 0 and len(seen) == 2
    folders = {work.parent for _, work, _ in seen}
    assert len(folders) == 1 and next(iter(folders)).name.startswith("bench-") and all(d for *_, d in seen)
    assert not next(iter(folders)).exists()  # removed after the runs
    out = json.loads((tmp_path / "benchmarks/results/w.json").read_text())
    assert out["env"] == {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": None} and out["torch"]
    assert out["median"]["default"]["recipe"] == "default" and out["median"]["default"]["device"] == "cpu"


def test_the_half_set_emulation_is_warned_about(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    _fake_main(tmp_path, monkeypatch, "--recipes", "default", "--name", "h")
    assert "ATEN_CPU_CAPABILITY is set but ONEDNN_MAX_CPU_ISA is not" in capsys.readouterr().err


def test_a_results_file_is_written_whole_or_not_at_all_with_its_command(tmp_path, monkeypatch, capsys):
    """The benchmarks wrote their files in place: a failure halfway left half a file; time_to_accuracy
    also recorded this process's arguments for an empty argv."""
    from benchmarks.record import write_results

    monkeypatch.setattr(sys, "argv", ["time_to_accuracy", "--from-argv"])
    out = tmp_path / "results" / "r.json"
    write_results(out, "time_to_accuracy", [], {"device": "the card", "runs": [1]})
    first = out.read_text()
    data = json.loads(first)
    assert data["command"] == "python -m benchmarks.time_to_accuracy" and data["device"] == "the card"
    assert data["runs"] == [1] and {"torch", "commit", "env"} <= data.keys() and data["processor"]
    assert f"wrote {out}" in capsys.readouterr().out
    # where "auto" would pick another device (a GPU machine), the run's own device is the one recorded
    monkeypatch.setattr("src.training.runtime.resolve_device", lambda spec: torch.device("meta"))
    write_results(out, "kernels", None, {"w": "a b"}, torch.device("cpu"))
    again = json.loads(out.read_text())
    assert again["command"] == "python -m benchmarks.kernels --from-argv" and again["device"] == "cpu"
    real_write = Path.write_text

    def disk_full(path, text, *args, **kwargs):
        real_write(path, text[: len(text) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    with pytest.raises(OSError):
        write_results(out, "kernels", None, {"runs": list(range(100))})
    monkeypatch.undo()
    assert json.loads(out.read_text())["w"] == "a b" and [f.name for f in out.parent.iterdir()] == ["r.json"]


def test_set_reaches_the_default_recipe_and_data_keys_both(tmp_path, monkeypatch):
    code, seen = _fake_main(
        tmp_path, monkeypatch, "--set", "data.val_per_class=100", "train.label_smoothing=0.1", "--name", "s"
    )
    (default, *_), (seed, *_) = seen
    assert code == 0 and default.train.label_smoothing == 0.1 and seed.train.label_smoothing == 0.04
    assert default.data.val_per_class == seed.data.val_per_class == 100


@pytest.mark.parametrize(
    "args,message",
    [
        (["--seeds", "0", "0"], "--seeds 0 0: each seed once"),
        (["--runs", "0"], "--runs 0: at least 1"),
        (["--budget", "-5"], "--budget -5: seconds above 0"),
        (["--peak-gflops", "-1"], "--peak-gflops -1.0: above 0"),
        (["--tta-fractions", "-0.5"], "--tta-fractions: each in [0, 1]"),
        (["--set", "train.seed=3"], "--set train.seed: set by the benchmark itself; use --seeds"),
        (["--set", "foo"], "--set 'foo': expected KEY=VALUE"),
        (["--set", "train.lr=-1"], "error: --set train.lr=-1: "),  # the option's value: not "params.yaml:"
        (["--budget", "inf"], "--budget inf: seconds above 0, finite"),  # it blamed params.yaml's time_budget_s
        (["--name", "../../tmp/x"], "--name '../../tmp/x': not a plain file name"),  # it wrote outside the folder
        (["--name", "x" * 300], "not a plain file name; allowed: letters, digits"),  # it failed after training
        # a batch larger than the split, before either recipe trains (the notebook's failed after the default ran)
        (["--set", "data.train_per_class=20", "data.val_per_class=10"], "params.yaml: train.batch_size=256: larger"),
        (
            ["--set", "data.train_per_class=50", "train.batch_size=32"],
            "--recipes seed (the notebook's recipe): train.batch_size=128: larger than the training split (100 images)",
        ),
    ],
)
def test_bad_arguments_are_one_line(tmp_path, monkeypatch, capsys, args, message):
    code, seen = _fake_main(tmp_path, monkeypatch, *args)
    err = capsys.readouterr().err
    assert code == 2 and not seen and err.startswith("time_to_accuracy: error: ") and message in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    "variant,message",
    [
        ("h=train.half=bf16", "train.half=bf16: the step benchmark does not apply it"),
        ("e=train.ema_decay=0.99", "train.ema_decay=0.99: the step benchmark does not apply it"),
        ("m=augment.mixup_alpha=0.4", "augment.mixup_alpha=0.4: the step benchmark does not apply it"),
        ("g=gpu.use=always", "gpu.use=always: the step benchmark does not apply it"),
    ],
)
def test_the_step_benchmark_refuses_what_it_would_not_time(tmp_path, monkeypatch, capsys, variant, message):
    """A bf16 label on an fp32 step, or EMA/MixUp that never ran: refused, not mislabelled."""
    from benchmarks.cpu_step import run_cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    assert run_cli("cpu_step", cpu_step_main, ["--variant", variant, "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cpu_step: error: ") and message in err and not (tmp_path / "benchmarks").exists()


def test_the_step_benchmarks_variants_need_names_of_their_own_and_keep_quoted_values(tmp_path, monkeypatch, capsys):
    from benchmarks.cpu_step import run_cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    args = ["--steps", "1", "--variant", "a=train.threads=1", "--variant", "a=train.threads=2"]
    assert run_cli("cpu_step", cpu_step_main, args) == 2
    assert "each variant needs a name of its own" in capsys.readouterr().err
    assert run_cli("cpu_step", cpu_step_main, ["--steps", "1", "--variant", "a=b"]) == 2
    assert "cpu_step: error: --variant a 'b': expected KEY=VALUE" in capsys.readouterr().err  # it said --set
    with pytest.raises(SystemExit):
        cpu_step_main(["--profile-rows", "-1"])
    for bad in ("0", "-1", "x"):
        with pytest.raises(SystemExit):
            cpu_step_main(["--steps", bad])
    small = "model.fast_cnn.widths=[8,16,16] train.batch_size=16 'train.threads=1'"
    cpu_step_main(["--steps", "1", "--repeats", "1", "--profile-rows", "0", "--name", "q", "--variant", f"s={small}"])
    out = json.loads((tmp_path / "benchmarks/results/q.json").read_text())
    assert out["variants"]["s"]["threads"] == 1 and "'s=model.fast_cnn.widths=[8,16,16]" in out["command"]


def test_the_gpu_recipe_keeps_the_benchmarks_epochs_and_the_notebook_recipe_stays_itself(
    small_batches, tmp_path, monkeypatch
):
    """Where the train stage would train the `gpu` recipe (here forced with gpu.use=always), the
    benchmark trains it too, for its own --epochs and seed; the notebook recipe is never swapped."""
    import argparse

    import benchmarks.time_to_accuracy as bench
    from src.data.raw import BATCHES_DIR, load_cifar10, read_class_names

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    args = argparse.Namespace(
        classes=["cat", "dog"], epochs=3, set=["gpu.use=always", "gpu.train.batch_size=16", "data.val_per_class=10"]
    )
    recipes = bench.build_recipes(args)
    assert recipes["seed"].gpu.use == "never" and recipes["default"].gpu.use == "always"

    class Trained(Exception):
        pass

    def fake_fit(model, train, val, mean, std, device, cfg, *rest):
        raise Trained(cfg.train)

    monkeypatch.setattr(bench, "fit", fake_fit)
    batches = small_batches / BATCHES_DIR
    raw, names = load_cifar10(batches), read_class_names(batches)
    gpu = recipes["default"].recipe_for("cuda")[0].train
    with pytest.raises(Trained) as e:
        bench.run_recipe(recipes["default"], raw, names, None, 7, tmp_path / "w", ())
    t = e.value.args[0]
    assert (t.epochs, t.seed, t.batch_size, t.optimizer) == (3, 7, gpu.batch_size, gpu.optimizer) and gpu.epochs != 3
