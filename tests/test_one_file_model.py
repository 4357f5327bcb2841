"""A model is one file: drop it in src/models/, name it in params, and every stage works with it."""

from __future__ import annotations

import json

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


def test_what_the_stages_need_of_a_model_is_checked_first():
    """A plain nn.Module, a net without Conv2d and feature layers that do not exist passed the check
    stage and failed later: a traceback in train, a KeyError in visualize, "allowed: 0 to -1"."""
    import torch
    from torch import nn

    from src.errors import ParamsError
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

    where = "params.yaml: model.name='m': tests.test_one_file_model"
    for model, message in (
        (Plain(), "Plain is not a LabModel; subclass src.models.base.LabModel"),
        (NoConv(), "NoConv has no Conv2d layer; the lab's filters, feature maps and Grad-CAM need one"),
        (WrongLayers(), "WrongLayers.feature_layers() names 'conv_2', not a module of the model; its modules: conv"),
    ):
        with pytest.raises(ParamsError) as e:
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
