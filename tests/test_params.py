"""Bad params stop with one line naming the key, the value and what is allowed."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from src.models import model_section
from src.params import ParamsError, check_runtime, flatten, load_params, parse_params
from tests.conftest import REPO

BASE = yaml.safe_load((REPO / "params.yaml").read_text())


def with_change(path: str, value):
    raw = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    d = raw
    for k in parents:
        d = d[k]
    d[last] = value
    return raw


def validate(raw: dict) -> None:
    """What the check stage validates: every section, and the chosen model's own section."""
    model_section(parse_params(raw).model)


def test_committed_params_are_valid():
    p = load_params(REPO / "params.yaml")
    assert p.model.name in ("fast_cnn", "seed_cnn") and p.train.epochs >= 1


@pytest.mark.parametrize(
    "path,value,expect",
    [
        ("data.classes", ["airplane", "dgo"], ["data.classes", "unknown class 'dgo'", "did you mean 'dog'"]),
        ("data.classes", ["cat", "cat", "dog"], ["data.classes", "listed twice"]),
        ("data.classes", ["cat"], ["data.classes", "at least 2 classes"]),
        ("data.classes", "some", ["data.classes", "'some'"]),
        ("data.train_per_class", 4900, ["train_per_class=4900", "more than the data holds"]),
        ("data.val_per_class", 5000, ["val_per_class=5000", "leaves no training images"]),
        ("data.test_per_class", 1001, ["data.test_per_class=1001", "less than or equal to 1000"]),
        (
            "data.normalize",
            [[125.3, 123.0, 113.9], [63.0, 62.1, 66.7]],
            ["data.normalize=[[125.3, 123.0, 113.9], [63.0, 62.1, 66.7]]", "0-1 pixel scale"],
        ),
        ("data.normalize", [[0.5, 0.5, 0.5], [0.2, 0, 0.2]], ["each std in (0, 1]"]),
        ("data.normalize", [[0.5, 0.5], [0.2, 0.2]], ["[[mean r,g,b], [std r,g,b]]"]),
        ("download.url", "not-a-url", ["download.url='not-a-url'", "http://, https://, ftp:// or file://"]),
        ("download.url", "http://[::1", ["download.url='http://[::1'", "a URL that urllib can fetch"]),
        ("visualize.seed", 2**64, [f"visualize.seed={2**64}", "less than or equal to 4294967295"]),
        ("train.seed", -1, ["train.seed=-1", "greater than or equal to 0"]),
        ("train.epochs", 0, ["train.epochs=0", "greater than or equal to 1"]),
        ("train.epochs", -3, ["train.epochs=-3"]),
        ("train.batch_size", 0, ["train.batch_size=0"]),
        ("train.lr", 0, ["train.lr=0", "greater than 0"]),
        ("train.lr", -0.1, ["train.lr=-0.1"]),
        # `.inf` in YAML passed every gt=0 and crashed the time budget's arithmetic 10 steps in
        ("train.time_budget_s", float("inf"), ["train.time_budget_s=inf", "finite number"]),
        ("train.lr", float("inf"), ["train.lr=inf", "finite number"]),
        ("download.backoff_s", float("inf"), ["download.backoff_s=inf", "finite number"]),
        # YAML's true/yes/on are booleans, and pydantic took True as 1: `epochs: true` trained one epoch
        ("train.epochs", True, ["train.epochs=True", "must be a number, not a boolean"]),
        ("train.time_budget_s", True, ["train.time_budget_s=True", "must be a number"]),
        ("train.lr", False, ["train.lr=False", "must be a number"]),
        ("data.train_per_class", True, ["data.train_per_class=True", "must be a number"]),
        ("model.fast_cnn.whiten_width", True, ["model.fast_cnn.whiten_width=True", "must be a number"]),
        ("model.fast_cnn.widths", [64, True, 256], ["widths=[64, True, 256]", "must be numbers, not booleans"]),
        ("data.normalize", [[0.5, 0.5, True], [0.2] * 3], ["data.normalize=", "must be numbers, not booleans"]),
        # pydantic named one member of the union: "Input should be 'computed' or 'cifar10'"
        ("data.normalize", "foo", ["data.normalize='foo': must be 'computed', 'cifar10' or [[mean r,g,b], [std"]),
        ("data.normalize", [["a"] * 3, [0.2] * 3], ["data.normalize=[['a', 'a', 'a'], [0.2, 0.2, 0.2]]: must be 'co"]),
        ("train.label_smoothing", 1.5, ["train.label_smoothing=1.5", "less than or equal to 1"]),
        ("model.seed_cnn.dropout", -0.1, ["model.seed_cnn.dropout=-0.1", "greater than or equal to 0"]),
        (
            "model.name",
            "resnet",
            ["model.name='resnet'", "unknown model", "fast_cnn (small and fast, the CPU default), seed_cnn ("],
        ),
        ("model.name", "seed-cnn", ["did you mean 'seed_cnn'"]),
        ("train.optimizer", "adam", ["train.optimizer='adam'", "'sgd', 'adamw' or 'muon'"]),
        # a choice spelt in other case, or nearly: the closest choice, as keys and classes get it
        ("train.optimizer", "Adam", ["'sgd', 'adamw' or 'muon' (did you mean 'adamw'?)"]),
        ("augment.crop_pad_mode", "Zeros", ["'reflect' or 'zeros' (did you mean 'zeros'?)"]),
        ("data.classes", "ALL", ["data.classes='ALL': must be 'all' or a list", "(did you mean 'all'?)"]),
        ("train.device", "gpu", ["train.device='gpu'", "'auto', 'cpu', 'cuda' or 'mps'"]),
        ("train.epoch", 3, ["unknown key 'train.epoch'", "did you mean 'train.epochs'"]),
        ("augment.mixup", 0.4, ["unknown key 'augment.mixup'", "did you mean 'augment.mixup_alpha'"]),
        # nothing close to suggest: the section's keys (it said only "unknown key")
        ("train.zzz", 1, ["unknown key 'train.zzz'; allowed: epochs, time_budget_s, batch_size,", ", deterministic"]),
        ("zzz", {"a": 1}, ["unknown key 'zzz'; allowed: download, data, augment, model, train, ", ", gpu"]),
        ("augment.brightness", -0.1, ["augment.brightness=-0.1", "greater than or equal to 0"]),
        ("augment.contrast", 1.0, ["augment.contrast=1.0", "less than 1"]),
        ("model.fast_cnn.widths", [64, 0, 256], ["model.fast_cnn.widths.1=0", "greater than 0"]),
        ("train.freeze_at", [0.8, 0.5], ["train.freeze_at=[0.8, 0.5]", "each in (0, 1), not decreasing"]),
        ("train.freeze_at", [0.5, 1.0], ["train.freeze_at=[0.5, 1.0]", "each in (0, 1)"]),
        ("train.freeze_at", 0.5, ["train.freeze_at=0.5", "list"]),
        ("model.fast_cnn.activation", "tanh", ["model.fast_cnn.activation='tanh'", "'gelu' or 'relu'"]),
        (
            "model.fast_cnn.width",
            [64, 128, 256],
            ["unknown key 'model.fast_cnn.width'", "did you mean 'model.fast_cnn.widths'"],
        ),
        ("model.fast_cn", {"widths": [1, 2, 3]}, ["unknown key 'model.fast_cn'", "did you mean 'model.fast_cnn'"]),
    ],
)
def test_bad_values_give_one_clear_line(path, value, expect):
    with pytest.raises(ParamsError) as e:
        validate(with_change(path, value))
    msg = str(e.value)
    assert "\n" not in msg
    for part in expect:
        assert part in msg, msg


@pytest.mark.parametrize(
    "path,value,read",
    [
        ("augment.hflip", False, False),
        ("evaluate.tta_flip", False, False),
        ("train.amp", False, "off"),  # `-S train.amp=off` arrives as False
        ("train.channels_last", True, "on"),
        ("gpu.use", False, "never"),
    ],
)
def test_booleans_still_set_the_keys_that_take_them(path, value, read):
    """The number keys refuse booleans; the switches, and the words YAML turns into booleans, do not."""
    p = parse_params(with_change(path, value))
    section, key = path.split(".")
    assert getattr(getattr(p, section), key) == read


def test_a_number_key_of_any_annotation_refuses_a_boolean():
    """PositiveInt | None is Annotated inside a Union: it counted as neither int nor float."""
    from pydantic import PositiveInt, ValidationError

    from src.schema import Section

    class S(Section):
        n: PositiveInt | None
        sizes: list[PositiveInt] | None

    for bad in ({"n": True, "sizes": None}, {"n": 1, "sizes": [2, False]}):
        with pytest.raises(ValidationError, match="not a boolean|not booleans"):
            S(**bad)
    assert S(n=3, sizes=[1, 2]).sizes == [1, 2] and S(n=None, sizes=None).n is None


def test_params_as_run_read_a_number_as_dvc_lock_records_it():
    """PyYAML reads 5e-4 in params.yaml as a string, DVC records 0.0005 in dvc.lock: the same value."""
    from src.params import not_as_run

    lock = {"stages": {"train": {"params": {"params.yaml": {"train": {"weight_decay": 0.0005, "epochs": 6}}}}}}
    assert not_as_run({"train": {"weight_decay": "5e-4", "epochs": 6}}, lock) == []
    assert not_as_run({"train": {"weight_decay": "1e-3", "epochs": 6}}, lock) == ["train.weight_decay"]
    assert not_as_run({"train": {"epochs": 6}}, lock) == ["train.weight_decay"]  # gone from params.yaml
    assert not_as_run({"train": {"epochs": 7}}, lock, ("evaluate",)) == []  # only the stages named


def test_freeze_at_needs_one_process():
    raw = with_change("train.freeze_at", [0.5])
    raw["train"]["nproc"] = 2
    with pytest.raises(ParamsError) as e:
        validate(raw)
    msg = str(e.value)
    assert "\n" not in msg
    assert "freeze_at=[0.5] with nproc=2" in msg and "use freeze_at: [] or nproc: 1" in msg, msg


def test_runtime_checks():
    p = parse_params(with_change("train.batch_size", 512))
    with pytest.raises(ParamsError) as e:
        check_runtime(p, n_train=300)
    assert str(e.value) == (
        "params.yaml: train.batch_size=512: larger than the training split (300 images); allowed: ≤ 300 (try 32)"
    )
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ParamsError, match="no CUDA GPU"):
            check_runtime(parse_params(with_change("train.device", "cuda")), n_train=1000)


DROPS_144 = (
    "params.yaml: warning: train.batch_size=256 trains on 256 of the 400 training images an epoch "
    "(1 step) and skips 144 (36 %: the last partial batch is dropped); train.batch_size=200 would skip 0"
)


def test_a_batch_that_leaves_a_large_remainder_unseen_is_a_warning(capsys, monkeypatch):
    # 2 classes x 200 images, batch 256: one step an epoch, 144 images never trained on
    monkeypatch.delenv("RANK", raising=False)
    check_runtime(parse_params(with_change("train.batch_size", 256)), n_train=400)
    captured = capsys.readouterr()
    assert captured.err == DROPS_144 + "\n" and captured.out == ""
    monkeypatch.setenv("RANK", "1")  # under torchrun only rank 0 prints it
    check_runtime(parse_params(with_change("train.batch_size", 256)), n_train=400)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "batch_size,n_train,nproc,expect",
    [
        (256, 13500, 1, None),  # the default run: 188 of 13,500 skipped (1 %)
        (256, 600, 1, None),  # 88 of 600 (15 %): under a quarter
        (256, 256, 1, None),  # one step, nothing skipped
        (350, 1000, 1, "trains on 700 of the 1000 training images an epoch (2 steps) and skips 300 (30 %"),
        (600, 1000, 2, "skips 400 (40 %: the last partial batch is dropped); train.batch_size=500 would skip 0"),
        (6, 10, 4, "train.batch_size=4 would skip 2"),  # the suggestion divides among the processes
    ],
)
def test_the_remainder_warning(batch_size, n_train, nproc, expect):
    from src.params import batch_remainder_warning

    line = batch_remainder_warning(batch_size, n_train, nproc)
    assert line is None if expect is None else (expect in line and "\n" not in line), line


def test_the_check_stage_meets_the_batch_size_with_the_split_it_will_train_on(tmp_path, monkeypatch, capsys):
    from stages.check import main as check
    from tests.conftest import params_with

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RANK", raising=False)
    small = {"data": {"classes": ["cat", "dog"], "train_per_class": 200}}
    check(params_with({**small, "train": {"batch_size": 256}}))
    assert capsys.readouterr().err == DROPS_144 + "\n"
    with pytest.raises(
        ParamsError,
        match=r"^params.yaml: train.batch_size=512: larger than the training split "
        r"\(400 images\); allowed: ≤ 400 \(try 32\)$",
    ):
        check(params_with({**small, "train": {"batch_size": 512}}))


@pytest.mark.parametrize("where", ["always", "auto on CUDA"])
def test_the_check_stage_checks_the_recipe_the_train_stage_will_run(where, tmp_path, monkeypatch):
    """gpu.use=always (or auto on a CUDA machine) trains the GPU recipe, whose batch of 1,024 does
    not fit 800 images: the check stage refuses it, before DVC deletes the train stage's outputs."""
    import torch

    import stages.check
    from tests.conftest import params_with

    monkeypatch.chdir(tmp_path)
    if where != "always":
        monkeypatch.setattr(stages.check, "resolve_device", lambda name: torch.device("cuda"))
    small = {"data": {"classes": ["cat", "dog"], "train_per_class": 400}}
    use = "always" if where == "always" else "auto"
    with pytest.raises(ParamsError) as e:
        stages.check.main(params_with({**small, "gpu": {"use": use}}))
    assert str(e.value) == (
        "params.yaml: train.batch_size=1024: larger than the training split (800 images); allowed: ≤ 800 "
        "(try 64) (a value of the GPU recipe: set it under gpu.train, or -S gpu.use=never)"
    )
    assert not (tmp_path / "data/params.ok").exists()
    stages.check.main(params_with({**small, "gpu": {"use": "never"}}))  # the default recipe's 256 fits
    assert (tmp_path / "data/params.ok").is_file()


def test_a_train_value_that_fails_under_the_gpu_recipe_too_is_not_blamed_on_it(tmp_path, monkeypatch):
    """train.device: cuda on a machine without a GPU: the recipe for CUDA is the GPU one, but the
    value is train's own, so the hint to change gpu.train (which would not fix it) stays out."""
    import torch

    import stages.check
    from tests.conftest import params_with

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(stages.check, "resolve_device", lambda name: torch.device(name))
    with pytest.raises(ParamsError) as e:
        stages.check.main(params_with({"train": {"device": "cuda"}}))
    assert str(e.value) == (
        "params.yaml: train.device='cuda': no CUDA GPU is visible on this machine; use 'auto' or 'cpu'"
    )


@pytest.mark.parametrize(
    "over, message, fits",
    [
        (
            {"train": {"freeze_at": [0.2, 0.4, 0.6, 0.8]}},
            "params.yaml: train.freeze_at=[0.2, 0.4, 0.6, 0.8]: 4 fractions, but this model has 3 stage(s) to "
            "freeze; allowed: at most 3",
            {"train": {"freeze_at": [0.2, 0.4, 0.6]}},
        ),
        (
            {"visualize": {"deep_filter_layer": 7}},
            "params.yaml: visualize.deep_filter_layer=7: out of range: there are 7 conv layers of model fast_cnn; "
            "allowed: 0 to 6",
            {"visualize": {"deep_filter_layer": 6}},
        ),
        (
            {"theory": {"image_index": 3000}},
            "params.yaml: theory.image_index=3000: out of range: there are 3,000 test images; allowed: 0 to 2,999",
            {"theory": {"image_index": 2999}},
        ),
        (
            {"report": {"image_index": 10_000}, "data": {"classes": "all"}},
            "params.yaml: report.image_index=10000: out of range: there are 10,000 test images; allowed: 0 to 9,999",
            {"report": {"image_index": 9_999}, "data": {"classes": "all"}},
        ),
        (
            {"theory": {"image_index": 100}, "data": {"test_per_class": 50, "classes": ["cat", "dog"]}},
            "params.yaml: theory.image_index=100: out of range: there are 100 test images; allowed: 0 to 99",
            {"theory": {"image_index": 99}, "data": {"test_per_class": 50, "classes": ["cat", "dog"]}},
        ),
    ],
    ids=["freeze_at", "deep_filter_layer", "theory", "report", "test_per_class"],
)
def test_the_check_stage_refuses_what_a_later_stage_could_not_do(over, message, fits, tmp_path, monkeypatch):
    """Values that only the model or the subset's size rule out: refused up front in one line,
    where the stages would fail after DVC deleted their outputs (freeze_at) or quietly draw
    another layer or image (the indices were clamped or wrapped)."""
    from stages.check import main as check
    from tests.conftest import params_with

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ParamsError) as e:
        check(params_with(over))
    assert str(e.value) == message
    assert not (tmp_path / "data/params.ok").exists()
    check(params_with(fits))
    assert (tmp_path / "data/params.ok").is_file()


def test_bad_yaml_and_missing_file(tmp_path):
    (tmp_path / "p.yaml").write_text("data: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "p.yaml")
    # where, and what PyYAML found: the first line of its text ("while scanning for the next token") said neither
    committed = (REPO / "params.yaml").read_text()
    line = next(i for i, t in enumerate(committed.splitlines(), 1) if t.startswith("  epochs:"))
    (tmp_path / "tab.yaml").write_text(committed.replace("  epochs:", "\tepochs:", 1))
    with pytest.raises(ParamsError) as e:
        load_params(tmp_path / "tab.yaml")
    assert str(e.value) == (
        f"{tmp_path / 'tab.yaml'}: not valid YAML: line {line}, column 1: found character '\\t' that cannot "
        "start any token; indent with spaces, not tabs"
    )
    # a second train: section appended (PyYAML kept the last, and the error named a key it lacked), or a key twice
    (tmp_path / "twice.yaml").write_text(committed + "train:\n  epochs: 3\n")
    with pytest.raises(
        ParamsError, match=r"line \d+, column 1: 'train' a second time at one level \(the first at line"
    ):
        load_params(tmp_path / "twice.yaml")
    (tmp_path / "key.yaml").write_text(committed.replace("  epochs:", "  epochs: 1\n  epochs:", 1))
    twice = (
        f"line {line + 1}, column 3: 'epochs' a second time at one level \\(the first at line {line}\\); each key once"
    )
    with pytest.raises(ParamsError, match=twice):
        load_params(tmp_path / "key.yaml")
    # what PyYAML read before the duplicate check stays read: a merge key (<<), an unhashable key's own error
    (tmp_path / "merge.yaml").write_text("a: &b {x: 1}\nd: {<<: *b, x: 2}\n")
    with pytest.raises(ParamsError, match="unknown key 'a'"):  # parsed, then refused by the schema
        load_params(tmp_path / "merge.yaml")
    (tmp_path / "list.yaml").write_text("? [a, b]\n: 1\n")
    with pytest.raises(ParamsError, match=r"list.yaml: not valid YAML: line 1, column 3: found unhashable key$"):
        load_params(tmp_path / "list.yaml")
    (tmp_path / "ctrl.yaml").write_text("a: \x01\n")  # no line from PyYAML: the message has no "at"
    with pytest.raises(ParamsError, match=r"ctrl.yaml: not valid YAML: unacceptable character #x0001: special"):
        load_params(tmp_path / "ctrl.yaml")
    (tmp_path / "folder.yaml").mkdir()  # a traceback (IsADirectoryError)
    with pytest.raises(
        ParamsError, match=r"folder.yaml: cannot be read \(Is a directory\); it must be the params file"
    ):
        load_params(tmp_path / "folder.yaml")
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "missing.yaml")
    (tmp_path / "latin1.yaml").write_bytes("train: {lr: 0.03}  # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ParamsError, match=r"latin1.yaml: not UTF-8 text \(byte 24\); save it as UTF-8"):
        load_params(tmp_path / "latin1.yaml")


@pytest.mark.parametrize("path", ["train.epochs", "data.classes", "model.fast_cnn.widths", "evaluate"])
def test_a_missing_key_is_named(path):
    raw = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    d = raw
    for k in parents:
        d = d[k]
    del d[last]
    with pytest.raises(ParamsError, match=f"params.yaml: {path}: missing"):
        validate(raw)


def test_no_default_is_written_twice():
    """params.yaml is the one source of values: no field of the schema carries a default."""
    from src.models import REGISTRY
    from src.params import Params

    def walk(model, where):
        for name, f in model.model_fields.items():
            assert f.is_required(), f"{where}{name} has a default in the schema; put it in params.yaml only"
            ann = f.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                walk(ann, f"{where}{name}.")

    walk(Params, "")
    for name, spec in REGISTRY.items():
        if name in BASE["model"]:
            walk(spec.params, f"model.{name}.")


def test_dvc_exp_run_set_changes_only_the_lines_it_sets(tmp_path):
    """params.yaml is written the way DVC's -S writes it, so an experiment's diff is its change."""
    from dvc.utils.hydra import apply_overrides

    before = (REPO / "params.yaml").read_text().splitlines()
    path = tmp_path / "params.yaml"
    path.write_text("\n".join(before) + "\n")
    apply_overrides(path, ["train.lr=0.05", "data.classes=[cat,dog]", "train.time_budget_s=120"])
    after = path.read_text().splitlines()
    import difflib

    changed = [
        line
        for line in difflib.unified_diff(before, after, lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert sorted(changed) == sorted(
        [
            "-  - airplane",
            "-  - automobile",
            "-  - bird",
            "+  - cat",
            "+  - dog",
            "-  time_budget_s:          # seconds for the whole training loop, the schedule sized to fit; "
            "empty (null) = use epochs",
            "+  time_budget_s: 120      # seconds for the whole training loop, the schedule sized to fit; "
            "empty (null) = use epochs",
            "-  lr: 0.03                # base lr; the one-cycle peak is lr * max_lr_factor",
            "+  lr: 0.05                # base lr; the one-cycle peak is lr * max_lr_factor",
        ]
    )
    assert parse_params(yaml.safe_load(path.read_text())).train.lr == 0.05


@pytest.mark.parametrize(
    "key,value,expect",
    [("amp", False, "off"), ("amp", True, "bf16"), ("channels_last", False, "off"), ("channels_last", True, "on")],
)
def test_on_off_switches_survive_yaml_booleans(key, value, expect):
    # `dvc exp run -S train.amp=off` writes `amp: false`: YAML 1.1 reads on/off as booleans
    assert getattr(parse_params(with_change(f"train.{key}", value)).train, key) == expect


def test_dvc_can_set_every_list_param_to_an_empty_list(tmp_path):
    """`dvc exp run -S 'data.classes=[]'` must reach the check stage's one line: DVC's own writer
    corrupted params.yaml (a YAML scanner error, exit 255) when a block list's key carried its
    comment on the same line, so each such comment stands on the line above its key (and never
    between two lists, where the writer dropped it)."""
    from dvc.utils.hydra import apply_overrides

    text = (REPO / "params.yaml").read_text()
    keys = [k for k, v in flatten(yaml.safe_load(text)).items() if isinstance(v, list)]
    assert {"data.classes", "model.fast_cnn.widths", "model.seed_cnn.kernels"} <= set(keys)
    keys.append("data.normalize")  # "computed" now, a list of two lists when an experiment sets its own

    def comments(t: str) -> list[str]:
        return [line.strip() for line in t.splitlines() if line.strip().startswith("#")]

    for key in keys:
        path = tmp_path / "params.yaml"
        path.write_text(text)
        # and back from a list an experiment set: an empty list starts as `[]`, and its comment
        # on the key's line broke the file only on the way back
        for value in ("[]", "[1,2]", "[]"):
            apply_overrides(path, [f"{key}={value}"])
            after = yaml.safe_load(path.read_text())
            for part in key.split("."):
                after = after[part]
            assert after == yaml.safe_load(value), (key, value)
            assert comments(path.read_text()) == comments(text), (key, value)  # every comment kept


def _commented_keys(text: str) -> set[str]:
    """Dotted keys of params.yaml with a comment on their line, or named in a comment above them
    in their section (`# widths, kernels: ...` covers both)."""
    found, stack, named = set(), [], {}
    for line in text.splitlines():
        if line.strip().startswith("#"):
            names = line.strip()[1:].split(":")[0]
            depth = (len(line) - len(line.lstrip())) // 2
            named.setdefault(depth, set()).update(n.strip() for n in names.split(","))
            continue
        m = re.match(r"^( *)(\w+):(.*)$", line)
        if not m:
            continue
        depth = len(m.group(1)) // 2
        stack = stack[:depth] + [m.group(2)]
        named = {d: n for d, n in named.items() if d <= depth}  # a comment above belongs to its own section
        if "#" in m.group(3) or m.group(2) in named.get(depth, ()):
            found.add(".".join(stack))
    return found


def test_every_param_is_commented():
    """A student changes what they understand: every value says what it does, a gpu override too
    (the GPU recipe's values are what a student on Colab changes; eleven of them had no comment)."""
    text = (REPO / "params.yaml").read_text()
    commented = _commented_keys(text)
    missing = [k for k in flatten(yaml.safe_load(text)) if k not in commented]
    assert not missing, missing
