"""A model is one file: drop it in src/models/, name it in params, and every stage works with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import make_repo, sh

TINY_MODEL = '''"""A deliberately small model, written by a test in one file."""
import torch
from pydantic import Field
from torch import nn

from src.models.base import LabModel, register
from src.schema import Section


class TinyCNNParams(Section):
    width: int = Field(8, ge=1)  # a default: a model that has one for every key needs no section


@register("tiny_cnn", TinyCNNParams, "a test's one-file model")
class TinyCNN(LabModel):
    def __init__(self, p: TinyCNNParams, num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, p.width, 3, padding=1)        # (B, w, 32, 32)
        self.pool = nn.MaxPool2d(2)                             # (B, w, 16, 16)
        self.conv2 = nn.Conv2d(p.width, p.width, 3, padding=1)  # (B, w, 16, 16)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(p.width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv2(self.pool(torch.relu(self.conv1(x))))))
'''


@pytest.mark.parametrize("section", [None, {"width": 6}], ids=["defaults", "own-section"])
def test_a_model_in_one_file_runs_through_every_stage(tmp_path, full_mirror, section):
    over = {"model": {"name": "tiny_cnn", **({"tiny_cnn": section} if section else {})}}
    repo = make_repo(tmp_path / "lab", full_mirror, over=over, files={"src/models/tiny_cnn.py": TINY_MODEL})
    out = sh(repo, "dvc", "repro", env_extra={"CIFAR10_MIRROR": str(full_mirror)})
    # no BatchNorm after its convs: Muon (the default optimizer) has nothing to take, and says so
    assert "train: note: no conv of this model feeds a BatchNorm (Muon's rescaling needs one): it trains with SGD" in (
        out.stdout + out.stderr
    )
    read = lambda path: json.loads((repo / path).read_text())  # noqa: E731
    w = (section or {}).get("width", 8)
    train, ev, vis, th = (
        read(f) for f in ("metrics/train.json", "metrics/eval.json", "plots/visualize.json", "metrics/theory.json")
    )
    assert train["model"] == "tiny_cnn"
    assert train["params"] == 3 * w * 9 + w + w * w * 9 + w + w * 3 + 3  # conv1, conv2, Linear (3 classes)
    assert ev["test_images"] == 60 and 0 <= ev["test_acc"] <= 1
    assert vis["model"] == "tiny_cnn" and vis["first_layer"] == {
        "layer": "conv1",
        "tiles": w,
        "out_channels": w,
        "learned": True,
    }
    # the default feature layers: both convs (in no block) and the pool
    assert sorted(vis["feature_maps"]["cat_1"]) == ["conv1", "conv2", "pool"]
    assert vis["feature_maps"]["cat_1"]["conv2"]["shape"] == [w, 16, 16]
    assert th["networks"]["tiny_cnn"]["num_classes"] == 3 and th["networks"]["tiny_cnn"]["shapes_agree"]
    assert (repo / "plots/visualize/gradcam.png").is_file()
    report = (repo / "report/lab_report.html").read_text()  # the report too, and it says what the model lacks
    assert "has no BatchNorm layer" in report and "features.group1.conv1" not in report
    assert "<code>conv1</code> (the first layer whose" in report  # its neuron, term by term
    if section is None:  # its key added on the command line: the report's "What changed" said null → 7
        sh(repo, "dvc", "exp", "run", "-S", "+model.tiny_cnn.width=7", env_extra={"CIFAR10_MIRROR": str(full_mirror)})
        changed = (repo / "report/lab_report.html").read_text()
        assert "<td><code>model.tiny_cnn.width</code></td><td><i>not set</i></td><td>7</td>" in changed


def test_what_the_stages_need_of_a_model_is_checked_first():
    """A plain nn.Module, a net without Conv2d and feature layers that do not exist passed the check
    stage and failed later: a traceback in train, a KeyError in visualize, "allowed: 0 to -1"."""
    import torch
    from torch import nn

    from src.errors import ModelCodeError
    from src.models import LabModel, check_model

    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

    class NoConv(LabModel):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3 * 32 * 32, 3)

    class WrongLayers(Plain, LabModel):
        def feature_layers(self) -> list[str]:
            return ["conv", "conv_2"]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x).mean((2, 3))[:, :3]

    where = "tests.test_one_file_model."
    for model, message in (
        (Plain(), "Plain (model.name='m') is not a LabModel; subclass src.models.base.LabModel"),
        (
            NoConv(),
            "NoConv (model.name='m') has no Conv2d layer; the lab's filters, feature maps and Grad-CAM need one",
        ),
        (
            WrongLayers(),
            "WrongLayers (model.name='m'): its feature_layers() names 'conv_2', not a module of the model; "
            "its modules: conv",
        ),
    ):
        with pytest.raises(ModelCodeError) as e:
            check_model(model, "m")
        assert str(e.value).startswith(where) and message in str(e.value) and "\n" not in str(e.value)


def test_a_new_model_without_its_section_is_told_how_to_add_it(monkeypatch):
    """The generic line ("every key must be set; the committed params.yaml has them all") was false
    for a model the committed params.yaml has never heard of, and `-S model.x.width=8` needs DVC's +."""
    from pydantic import Field

    from src.errors import ParamsError
    from src.models import REGISTRY, ModelSpec, model_section
    from src.schema import Section
    from tests.conftest import params_with

    class NeedsWidth(Section):
        width: int = Field(ge=1)

    monkeypatch.setitem(REGISTRY, "two_conv", ModelSpec("two_conv", NeedsWidth, object, "a test's"))
    with pytest.raises(ParamsError) as e:
        model_section(params_with({"model": {"name": "two_conv"}}).model)
    assert str(e.value) == (
        "params.yaml: model.two_conv: missing; add the section with its keys (width) to params.yaml, or on the "
        "command line -S +model.two_conv.width=… for each (DVC's + adds a key)"
    )


BLOCKS_MODEL = '''"""Two conv blocks, each ending in its pool: the pattern students write first."""
import torch
from torch import nn

from src.models.base import LabModel, register
from src.schema import Section


class BlocksParams(Section):
    pass


@register("blocks_cnn", BlocksParams)
class BlocksCNN(LabModel):
    def __init__(self, p: BlocksParams, num_classes: int):
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 8 * 8, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block2(self.block1(x)))
'''


def _check_stage(tmp_path, files: dict[str, str], model: str = "fast_cnn"):
    """`python -m stages.check` in a copy of the code with `files` added and `model.name: model`."""
    import shutil
    import subprocess
    import sys

    import yaml

    from tests.conftest import REPO

    for name in ("src", "stages"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    for rel, text in files.items():
        (tmp_path / rel).write_text(text)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["name"] = model
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return subprocess.run([sys.executable, "-m", "stages.check"], cwd=tmp_path, capture_output=True, text=True)


SEED_CNN = (Path(__file__).parents[1] / "src/models/seed_cnn.py").read_text()
RAISES_IN_INIT = BLOCKS_MODEL.replace("        super().__init__()\n", "        super().__init__()\n        p.width\n")
WRONG_SHAPE = BLOCKS_MODEL.replace("nn.Linear(8 * 8 * 8, num_classes)", "nn.Identity()")
NO_FLATTEN = BLOCKS_MODEL.replace("nn.Flatten(), ", "")


@pytest.mark.parametrize(
    ("file", "text", "model", "line"),
    [
        (
            "broken_cnn.py",
            "import torch\n\n\ndef forward(x:\n    return x\n",
            "fast_cnn",  # a broken file stops every run: each file of the folder is imported
            "src/models/broken_cnn.py:4: SyntaxError: '(' was never closed (every file of src/models/ is loaded as a "
            "model: fix it, or move it out)",
        ),
        (
            "student_cnn.py",  # seed_cnn.py copied and not renamed: it replaced the notebook's net in silence
            SEED_CNN,
            "seed_cnn",
            "model name 'seed_cnn' is registered by two files, src/models/seed_cnn.py (SeedCNN) and "
            "src/models/student_cnn.py (SeedCNN): rename one in its @register",
        ),
        (
            "my_seed_cnn.py",  # imported before seed_cnn.py: the lab's own file came second, and was blamed
            SEED_CNN,
            "fast_cnn",
            "model name 'seed_cnn' is registered by two files, src/models/my_seed_cnn.py (SeedCNN) and "
            "src/models/seed_cnn.py (SeedCNN): rename one in its @register",
        ),
        (
            "blocks_cnn.py",
            RAISES_IN_INIT,
            "blocks_cnn",
            "src.models.blocks_cnn.BlocksCNN (model.name='blocks_cnn'): building it failed: "
            "src/models/blocks_cnn.py:17: AttributeError: "
            "'BlocksParams' object has no attribute 'width'",
        ),
        (
            "blocks_cnn.py",  # a head that never gives 3 logits: it trained, then evaluation crashed (IndexError)
            WRONG_SHAPE,
            "blocks_cnn",
            "src.models.blocks_cnn.BlocksCNN (model.name='blocks_cnn'): its forward pass gives (2, 512) "
            "for a batch (2, 3, 32, 32); expected (2, 3): one logit per class for each image (3 classes)",
        ),
        (
            "blocks_cnn.py",
            NO_FLATTEN,
            "blocks_cnn",
            "src.models.blocks_cnn.BlocksCNN (model.name='blocks_cnn'): its forward pass on a batch "
            "(2, 3, 32, 32) failed: src/models/blocks_cnn.py:22: RuntimeError: mat1 and mat2 shapes cannot be "
            "multiplied",
        ),
    ],
    ids=["syntax-error", "name-clash", "name-clash-first", "init-raises", "wrong-shape", "no-flatten"],
)
def test_a_mistake_in_a_model_file_is_one_line_from_the_check_stage(tmp_path, file, text, model, line):
    """Each was a traceback (or, for the clash and the shape, nothing until a later stage)."""
    out = _check_stage(tmp_path, {f"src/models/{file}": text}, model)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith(f"check: error: {line}"), out.stderr
    assert not (tmp_path / "data/params.ok").exists()


def test_the_model_name_list_describes_each_model(tmp_path):
    out = _check_stage(tmp_path, {"src/models/blocks_cnn.py": BLOCKS_MODEL}, "block_cnn")
    assert out.returncode == 2 and out.stderr.strip() == (
        "check: error: params.yaml: model.name='block_cnn': unknown model 'block_cnn' (did you mean 'blocks_cnn'?); "
        "allowed: blocks_cnn, fast_cnn (small and fast, the CPU default), "
        "seed_cnn (the notebook's 4.08 M-parameter net)"
    )
    assert _check_stage(tmp_path / "ok", {"src/models/blocks_cnn.py": BLOCKS_MODEL}, "blocks_cnn").returncode == 0


def test_a_misspelt_key_is_named_not_the_key_it_leaves_missing(monkeypatch):
    """`widht: 16` read "model.x.width: missing (… the committed params.yaml has them all)": the typo
    unnamed, and the hint false for a model the committed params.yaml has never held."""
    from pydantic import Field

    from src.errors import ParamsError
    from src.models import REGISTRY, ModelSpec, model_section
    from src.schema import Section
    from tests.conftest import params_with

    class NeedsWidth(Section):
        width: int = Field(ge=1)
        depth: int = Field(2, ge=1)

    monkeypatch.setitem(REGISTRY, "two_conv", ModelSpec("two_conv", NeedsWidth, object, ""))
    for section, message in (
        ({"widht": 16}, "params.yaml: unknown key 'model.two_conv.widht' (did you mean 'model.two_conv.width'?)"),
        (
            {"depth": 3},
            "params.yaml: model.two_conv.width: missing; add it to params.yaml, or -S +model.two_conv.width=… "
            "(DVC's + adds a key)",
        ),
    ):
        with pytest.raises(ParamsError) as e:
            model_section(params_with({"model": {"name": "two_conv", "two_conv": section}}).model)
        assert str(e.value) == message


def test_a_block_that_ends_in_its_pool_is_one_feature_layer(tmp_path):
    """Conv-BN-ReLU-MaxPool blocks listed each block and its pool: the same maps drawn twice."""
    import importlib.util

    path = tmp_path / "blocks_cnn_copy.py"
    path.write_text(BLOCKS_MODEL.replace('register("blocks_cnn"', 'register("blocks_cnn_copy"'))
    spec = importlib.util.spec_from_file_location("blocks_cnn_copy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from src.models import REGISTRY

    try:
        model = module.BlocksCNN(module.BlocksParams(), 3)
        assert model.feature_layers() == ["block1", "block2"]
    finally:
        REGISTRY.pop("blocks_cnn_copy", None)


def test_a_mistake_in_a_model_file_gets_no_params_undo_hint(monkeypatch, capsys):
    """Under `dvc exp run -S model.name=my_cnn`, a mistake in my_cnn.py's code ended with how to undo
    the -S value in params.yaml: the fix is in the file. A params value keeps the hint."""
    import stages._common as common
    from src.errors import ModelCodeError, ParamsError
    from tests.conftest import REPO

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(common, "launching_command", lambda: "dvc exp run -S model.name=my_cnn")
    monkeypatch.setattr(common, "newest_experiment", lambda: None)
    for error, hinted in ((ModelCodeError("src/models/my_cnn.py:3: SyntaxError: x"), False), (ParamsError("p"), True)):

        def main(p, error=error):
            raise error

        assert common._outcome("check", main, by_torchrun=False) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"check: error: {error}") and ("left this value in params.yaml" in err) == hinted, err


def test_a_broken_model_file_is_its_own_line_where_a_checkpoint_loads(tmp_path, monkeypatch):
    """evaluate, visualize, the report and verify read "best.pt: its params do not fit this version of
    the code (…SyntaxError…); retrain": a scratch file in src/models/ is no reason to retrain."""
    from src.errors import ModelCodeError
    from src.models import BROKEN, build_model
    from src.training.checkpoints import load_trained, save_checkpoint
    from tests.conftest import params_with

    p = params_with({})
    save_checkpoint(
        tmp_path / "best.pt", build_model(p.model, 3).state_dict(), {"params": p.model_dump(), "classes": list("abc")}
    )
    monkeypatch.setitem(BROKEN, "src/models/zz.py", "src/models/zz.py:3: SyntaxError: invalid syntax")
    with pytest.raises(ModelCodeError) as e:
        load_trained(tmp_path / "best.pt", list("abc"))
    assert str(e.value) == "src/models/zz.py:3: SyntaxError: invalid syntax"
