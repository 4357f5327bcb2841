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
    sh(repo, "dvc", "repro", env_extra={"CIFAR10_MIRROR": str(full_mirror)})
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
