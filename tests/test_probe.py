"""Receptive fields, the patches that excite a channel most, one first-layer output by hand —
for both networks, 3 and 10 classes."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from src.data.cifar import normalize
from src.models import build_model, conv_layers
from src.params import VisualizeParams
from src.teach.probe import KEPT, StrongestResponses, conv_sum, crop, receptive_fields, select_patches, top_patches
from src.training.evaluation import predict_logits
from tests.conftest import params_with

FIELDS = {"fast_cnn": [2, 4, 9, 13, 23, 31, 51], "seed_cnn": [5, 9, 14, 22, 32, 48]}


def model(name: str, k: int):
    torch.manual_seed(0)
    return build_model(params_with({"model": {"name": name}}).model, k).eval()


@pytest.mark.parametrize("name", ["fast_cnn", "seed_cnn"])
def test_receptive_fields_follow_the_layers(name):
    m = model(name, 3)
    assert [f.size for f in receptive_fields(m).values()] == FIELDS[name]
    first = receptive_fields(m)[conv_layers(m)[0][0]]
    k, p = conv_layers(m)[0][1].kernel_size[0], conv_layers(m)[0][1].padding[0]
    assert first.box(0, 0) == (-p, -p, k - p, k - p) and first.box(3, 5) == (3 - p, 5 - p, 3 - p + k, 5 - p + k)


@pytest.mark.parametrize("name,k", [("fast_cnn", 3), ("fast_cnn", 10), ("seed_cnn", 3), ("seed_cnn", 10)])
def test_the_patches_shown_are_the_strongest_in_order(name, k):
    m = model(name, k)
    x = torch.randn(40, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    found = top_patches(m, x, k=5, channels=4, batch_size=16)  # several batches: the running merge is tested too
    assert [t.layer for t in found] == [n for n, _ in conv_layers(m)]
    # brute force with the layout top_patches runs in (channels-last: the same sums in the same order)
    ref = copy.deepcopy(m).to(memory_format=torch.channels_last)
    mods = dict(ref.named_modules())
    for t in found:
        seen = {}
        h = mods[t.layer].register_forward_hook(lambda mod, i, o, seen=seen: seen.__setitem__("a", o.detach()))
        with torch.no_grad():
            ref(x.contiguous(memory_format=torch.channels_last))
            plain = dict(m.named_modules())[t.layer]
            h2 = plain.register_forward_hook(lambda mod, i, o, seen=seen: seen.__setitem__("nchw", o.detach()))
            m(x)
            h2.remove()
        h.remove()
        a = seen["a"]  # (N, C, H, W), brute force
        torch.testing.assert_close(a, seen["nchw"], rtol=1e-5, atol=1e-5)  # and the plain layout's numbers
        per_image = a.flatten(2).max(2).values  # (N, C)
        kth = per_image.topk(5, dim=0).values[-1]
        assert t.channels == torch.argsort(kth, descending=True)[:4].tolist()
        for r, c in enumerate(t.channels):
            want = torch.argsort(per_image[:, c], descending=True)[:5]
            np.testing.assert_allclose(t.values[r], per_image[want, c].numpy(), rtol=1e-6)
            assert (np.diff(t.values[r]) <= 0).all()  # strongest first
            for q, img in enumerate(t.images[r]):
                i, j = t.positions[r, q]
                assert a[img, c, i, j] == per_image[img, c]  # the position shown is where it peaks
        assert t.learned == mods[t.layer].weight.requires_grad


@pytest.mark.parametrize("tta_fraction", [0.25, 1.0])
def test_evaluation_notes_the_plain_pass_only_and_finds_the_same_patches(tta_fraction):
    m = model("fast_cnn", 3)
    x = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    mean, std = torch.full((3,), 120.0), torch.full((3,), 60.0)
    rec = StrongestResponses(m)
    with_rec = predict_logits(
        m,
        x,
        mean,
        std,
        batch_size=16,
        tta_flip=True,
        tta_shift=1,
        tta_fraction=tta_fraction,
        plain_pass=rec.armed,
        channels_last=True,  # the layout top_patches runs in: the same sums, so the same near-ties
    )
    rec.close()
    assert not m._forward_hooks and all(not mod._forward_hooks for mod in m.modules())
    top = rec.top()
    assert top["count"] == 40  # each test image once: TTA's mirrored and shifted views are not noted
    torch.testing.assert_close(
        with_rec, predict_logits(m, x, mean, std, batch_size=16, tta_flip=True, tta_shift=1, tta_fraction=tta_fraction)
    )
    own = top_patches(m, normalize(x, mean, std), k=5, channels=4, batch_size=16)
    for t, s in zip(own, select_patches(m, top, k=5, channels=4), strict=True):
        assert (t.layer, t.channels) == (s.layer, s.channels)
        np.testing.assert_array_equal(t.images, s.images)
        np.testing.assert_array_equal(t.positions, s.positions)
        np.testing.assert_allclose(t.values, s.values, rtol=1e-5)


def test_the_evaluate_stage_keeps_as_many_patches_as_visualize_may_ask():
    bound = next(m.le for m in VisualizeParams.model_fields["patch_top"].metadata if hasattr(m, "le"))
    assert bound == KEPT


def test_a_patch_hanging_over_the_border_is_padded_black():
    img = torch.full((3, 32, 32), 200, dtype=torch.uint8)
    p = crop(img, (-2, 30, 3, 35))
    assert p.shape == (5, 5, 3) and (p[:2] == 0).all() and (p[:, 2:] == 0).all() and (p[2:, :2] == 200).all()


@pytest.mark.parametrize("name", ["fast_cnn", "seed_cnn"])
def test_one_first_layer_output_by_hand_equals_pytorch(name):
    m = model(name, 3)
    x = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(2))
    for c, i, j in [(0, 0, 0), (5, 7, 30), (11, 30, 2)]:
        r = conv_sum(m, x, c, i, j)
        assert abs(r["sum"] - r["torch"]) < 1e-5
        k = r["kernel"]
        assert r["window"].shape == (3, k, k) and r["box"][2] - r["box"][0] == k
