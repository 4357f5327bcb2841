"""The explorer's API on both networks, 3 and 10 classes: probabilities equal the model's, every
layer's maps, Grad-CAM for any class, the hand-written sum equals PyTorch, a class's confusion row,
and clear messages for bad input (no model yet, another class list, a non-image, an oversized file)."""
from __future__ import annotations

import base64
import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from src import explorer as E
from src.data import normalize
from src.explore import create_app
from src.models import build_model
from src.params import CIFAR10_CLASSES
from tests.conftest import params_with


def synthetic_lab(name: str, k: int) -> E.Lab:
    torch.manual_seed(0)
    model = build_model(params_with({"model": {"name": name}}).model, k).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (60, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = np.arange(60) % k
    pred = (y + (np.arange(60) % 4 == 0)) % k
    conf = np.random.default_rng(0).uniform(0.3, 1.0, 60)
    return E.Lab(model, list(CIFAR10_CLASSES[:k]), torch.tensor([0.5] * 3), torch.tensor([0.25] * 3), x, y, pred,
                 conf, name)


@pytest.fixture(params=[("fast_cnn", 3), ("fast_cnn", 10), ("seed_cnn", 3), ("seed_cnn", 10)],
                ids=lambda p: f"{p[0]}-{p[1]}")
def client(request):
    lab = synthetic_lab(*request.param)
    return create_app(lab=lab).test_client(), lab


def png_bytes(rgb: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()


def test_probabilities_maps_gradcam_and_sum(client):
    c, lab = client
    r = c.post("/api/analyse", json={"index": 7}).get_json()
    with torch.no_grad():
        want = lab.model(normalize(lab.test_x[7:8], lab.mean, lab.std)).softmax(1)[0].numpy()
    np.testing.assert_allclose([p["p"] for p in r["probs"]], want, atol=1e-6)
    assert [p["class"] for p in r["probs"]] == lab.classes and r["pred"] == lab.classes[int(want.argmax())]
    layers = lab.model.feature_layers()
    assert [l["name"] for l in r["layers"]] == layers
    for l in r["layers"]:  # every channel in the mosaic: rows × cols cells of the layer's real size
        im = Image.open(io.BytesIO(base64.b64decode(l["mosaic"])))
        ch, h, w = l["shape"]
        assert l["rows"] * l["cols"] >= ch > (l["rows"] - 1) * l["cols"]
        assert im.size == (l["cols"] * (w + 1) - 1, l["rows"] * (h + 1) - 1)
    for cls in (lab.classes[0], lab.classes[-1]):
        g = c.post("/api/gradcam", json={"index": 7, "cls": cls}).get_json()
        assert g["class"] == cls and Image.open(io.BytesIO(base64.b64decode(g["png"]))).size == (32, 32)
    s = c.post("/api/conv", json={"index": 7, "channel": 1, "i": 2, "j": 3}).get_json()
    assert s["sum"] == s["torch"]
    fc = r["first_conv"]
    assert abs(float(s["torch"]) - fc["maps"][1][2][3]) < 1e-3


def test_picking_and_the_class_view(client):
    c, lab = client
    r = c.get(f"/api/images?cls={lab.classes[1]}&which=wrong&order=most").get_json()
    idx = [it["index"] for it in r["items"]]
    assert all(lab.test_y[i] == 1 and lab.pred[i] != 1 for i in idx)
    assert [it["conf"] for it in r["items"]] == sorted((it["conf"] for it in r["items"]), reverse=True)
    assert c.get("/api/images?page=99&per=10").get_json()["page"] == 5  # the last page
    v = c.get(f"/api/class/{lab.classes[1]}").get_json()
    assert sum(v["row"].values()) == v["images"] == int((lab.test_y == 1).sum())
    assert [m["index"] for m in v["mistakes"]] == sorted(idx, key=lambda i: -lab.conf[i])[:12]


def test_uploads_good_and_bad(client):
    c, lab = client
    rgb = np.zeros((64, 48, 3), dtype=np.uint8)
    rgb[:, :, 2] = 255
    for fmt in ("PNG", "JPEG"):
        r = c.post("/api/analyse", data={"file": (io.BytesIO(png_bytes(rgb, fmt)), f"blue.{fmt.lower()}")})
        assert r.status_code == 200 and r.get_json()["pred"] in lab.classes
        assert Image.open(io.BytesIO(base64.b64decode(r.get_json()["image"]))).size == (32, 32)
    r = c.post("/api/analyse", data={"file": (io.BytesIO(b"just some text\n"), "notes.txt")})
    assert r.status_code == 400 and "not a PNG or JPEG image" in r.get_json()["error"]
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    r = c.post("/api/analyse", data={"file": (io.BytesIO(gif.getvalue()), "x.gif")})
    assert r.status_code == 400 and "GIF" in r.get_json()["error"]
    r = c.post("/api/analyse", data={"file": (io.BytesIO(b"\0" * (E.MAX_UPLOAD_BYTES + 200_000)), "huge.png")})
    assert r.status_code == 413 and "too large" in r.get_json()["error"]
    assert c.post("/api/analyse", json={"index": 10_000}).status_code == 400
    assert "unknown class" in c.post("/api/gradcam", json={"index": 0, "cls": "unicorn"}).get_json()["error"]
    assert c.post("/api/conv", json={"index": 0, "channel": 9999, "i": 0, "j": 0}).status_code == 400


def test_no_model_and_a_foreign_checkpoint_say_so(repo, tmp_path):
    r = create_app(root=tmp_path).test_client().get("/api/info")
    assert r.status_code == 409 and "run `dvc repro` first" in r.get_json()["error"]
    other = tmp_path / "other"
    for rel in ("models/best.pt", "data/subset.pt", "plots/eval/predictions.csv"):
        (other / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo / rel, other / rel)
    ck = torch.load(other / "models/best.pt", weights_only=False)
    ck["classes"] = ["cat", "dog"]
    torch.save(ck, other / "models/best.pt")
    r = create_app(root=other).test_client().get("/api/info")
    assert r.status_code == 409 and "trained on classes ['cat', 'dog']" in r.get_json()["error"]


def test_the_filters_view_on_the_trained_model(repo):
    c = create_app(root=repo).test_client()
    layers = c.get("/api/filters").get_json()
    vis = json.loads((repo / "plots/visualize.json").read_text())["top_patches"]
    assert [l["layer"] for l in layers] == list(vis)
    for l in layers:  # the page shows what the visualize stage's figure shows
        assert [r["channel"] for r in l["rows"]] == vis[l["layer"]]["channels"]
        assert [[p["index"] for p in r["patches"]] for r in l["rows"]] == vis[l["layer"]]["images"]
    assert layers[0]["learned"] is False  # fast_cnn's whitening layer
