"""The explorer's API on both networks, 3 and 10 classes: probabilities equal the model's, every
layer's maps, Grad-CAM for any class, the hand-written sum equals PyTorch, a class's confusion row,
and a test image's true class (none for an upload), and clear messages for bad input, one each (no model
yet, another class list, a non-image, an oversized file, a test index out of range, negative, not a
whole number or missing)."""

from __future__ import annotations

import base64
import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from src.data.cifar import normalize
from src.explorer import compute
from src.explorer.app import create_app
from src.models import build_model
from src.params import CIFAR10_CLASSES
from tests.conftest import REPO, params_with


def synthetic_lab(name: str, k: int, n: int = 60) -> compute.Lab:
    torch.manual_seed(0)
    model = build_model(params_with({"model": {"name": name}}).model, k).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = np.arange(n) % k
    pred = (y + (np.arange(n) % 4 == 0)) % k
    conf = np.random.default_rng(0).uniform(0.3, 1.0, n)
    return compute.Lab(
        model, list(CIFAR10_CLASSES[:k]), torch.tensor([0.5] * 3), torch.tensor([0.25] * 3), x, y, pred, conf, name
    )


@pytest.fixture(
    params=[("fast_cnn", 3), ("fast_cnn", 10), ("seed_cnn", 3), ("seed_cnn", 10)], ids=lambda p: f"{p[0]}-{p[1]}"
)
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
    assert [layer["name"] for layer in r["layers"]] == layers
    for layer in r["layers"]:  # every channel in the mosaic: rows × cols cells of the layer's real size
        im = Image.open(io.BytesIO(base64.b64decode(layer["mosaic"])))
        ch, h, w = layer["shape"]
        assert layer["rows"] * layer["cols"] >= ch > (layer["rows"] - 1) * layer["cols"]
        assert im.size == (layer["cols"] * (w + 1) - 1, layer["rows"] * (h + 1) - 1)
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
    assert c.get("/api/images?page=5&per=10").get_json()["page"] == 5  # the last page
    assert c.get("/api/images?page=99&per=10").status_code == 400  # past it: named, not moved
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
    r = c.post("/api/analyse", data={"file": (io.BytesIO(b"\0" * (compute.MAX_UPLOAD_BYTES + 200_000)), "huge.png")})
    assert r.status_code == 413 and "too large" in r.get_json()["error"]
    assert c.post("/api/analyse", json={"index": 10_000}).status_code == 400
    assert "unknown class" in c.post("/api/gradcam", json={"index": 0, "cls": "unicorn"}).get_json()["error"]
    assert c.post("/api/conv", json={"index": 0, "channel": 9999, "i": 0, "j": 0}).status_code == 400


def test_a_16_bit_grey_upload_keeps_its_tones_and_a_huge_one_says_so(monkeypatch):
    grey = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)  # 0 … 65,472
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="PNG")
    got = compute.decode_upload(buf.getvalue()).numpy()
    want = np.round(grey / 257)
    assert got.shape == (3, 32, 32) and all(np.abs(got[c] - want).max() <= 2 for c in range(3))
    monkeypatch.setattr(compute, "MAX_UPLOAD_PIXELS", 100)  # a 32×32 upload is then too large
    with pytest.raises(compute.InputError, match="^the image has too many pixels \\(32×32\\); at most 100$"):
        compute.decode_upload(buf.getvalue())
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow's own refusal (over 200 pixels), in Image.open
    with pytest.raises(compute.InputError, match="^the image has too many pixels; at most 100$"):
        compute.decode_upload(buf.getvalue())


def test_a_small_file_of_too_many_pixels_is_refused_before_it_is_decoded():
    """A reviewer's 12000×12000 PNG of one colour was 140 KB, under Pillow's own bomb limit (twice
    its warning's 89 M), and decoded it took 640 MB: the explorer's limit holds before decoding."""
    buf = io.BytesIO()
    Image.new("L", (8000, 8000)).save(buf, format="PNG")  # 64 M pixels, a few tens of KB
    assert len(buf.getvalue()) < compute.MAX_UPLOAD_BYTES
    with pytest.raises(compute.InputError, match="^the image has too many pixels \\(8000×8000\\); at most 50,000,000$"):
        compute.decode_upload(buf.getvalue())


def _png_with_text_chunk(size: int) -> bytes:
    """A 2×2 PNG whose zTXt chunk unpacks to `size` bytes (Pillow refuses text over 1 MB with a ValueError)."""
    import struct
    import zlib

    good = png_bytes(np.zeros((2, 2, 3), np.uint8))
    body = b"Comment\0\0" + zlib.compress(b"x" * size)
    chunk = struct.pack(">I", len(body)) + b"zTXt" + body + struct.pack(">I", zlib.crc32(b"zTXt" + body))
    return good[:33] + chunk + good[33:]  # after the 8-byte signature and the IHDR chunk


def test_damaged_and_unusual_files_get_a_400_naming_what_is_wrong(client):
    c, _ = client
    cases = {
        "text.png": (_png_with_text_chunk(2_000_000), "a damaged PNG file: it could not be read (Decompressed"),
        "cut.png": (png_bytes(np.zeros((40, 40, 3), np.uint8))[:-30], "a damaged PNG file"),
        "cut.jpg": (png_bytes(np.full((64, 64, 3), 90, np.uint8), "JPEG")[:300], "a damaged JPEG file"),
        # its header only: Pillow's text named a Python object ("<_io.BytesIO object at 0x7fed…>")
        "head.png": (b"\x89PNG\r\n\x1a\n", "a damaged PNG file: it could not be read (Pillow cannot identify it)"),
    }
    for name, (data, message) in cases.items():
        r = c.post("/api/analyse", data={"file": (io.BytesIO(data), name)})
        assert r.status_code == 400 and r.get_json()["error"].startswith(message), (name, r.get_json())
    assert c.post("/api/analyse", data={"file": (io.BytesIO(_png_with_text_chunk(1000)), "ok.png")}).status_code == 200


def test_a_phone_jpeg_that_pillow_reads_as_mpo_is_taken():
    """Cameras write JPEGs with extra frames (Pillow's format MPO): a JPEG all the same."""
    buf = io.BytesIO()
    frames = [Image.new("RGB", (48, 40), (200, 30, 30)), Image.new("RGB", (48, 40), (0, 0, 0))]
    frames[0].save(buf, format="MPO", save_all=True, append_images=frames[1:])
    assert Image.open(io.BytesIO(buf.getvalue())).format == "MPO"
    got = compute.decode_upload(buf.getvalue())
    assert got.shape == (3, 32, 32) and abs(int(got[0].float().mean()) - 200) <= 3


def test_a_test_image_has_its_true_class_and_an_upload_none(client):
    c, lab = client
    for index in (0, 7, 59):
        r = c.post("/api/analyse", json={"index": index}).get_json()
        true = lab.classes[int(lab.test_y[index])]
        assert (r["index"], r["true_class"], r["correct"]) == (index, true, r["pred"] == true)
        assert r["stage_pred"] == lab.classes[int(lab.pred[index])]  # what the lists show, with TTA
    assert c.post("/api/analyse?index=7").get_json()["true_class"] == lab.classes[int(lab.test_y[7])]
    up = c.post("/api/analyse", data={"file": (io.BytesIO(png_bytes(np.zeros((32, 32, 3), np.uint8))), "b.png")})
    back = c.post("/api/analyse", json={"image": up.get_json()["image"]})  # the page's copy of an upload
    for r in (up, back):
        assert r.status_code == 200 and (
            r.get_json()["index"],
            r.get_json()["true_class"],
            r.get_json()["correct"],
            r.get_json()["stage_pred"],
        ) == (None, None, None, None)


BAD_INDEX = [  # (JSON body or query string, the message for a 60-image test split)
    ({"index": 60}, "test image 60 does not exist (0–59)"),
    ({"index": 10_000}, "test image 10000 does not exist (0–59)"),
    ({"index": -1}, "test index -1 is negative: test images are numbered 0–59"),
    ({"index": 3.5}, "the test index must be a whole number 0–59, not 3.5"),
    ({"index": "seven"}, 'the test index must be a whole number 0–59, not "seven"'),
    ({"index": True}, "the test index must be a whole number 0–59, not true"),
    ({"index": None}, "the test index must be a whole number 0–59, not null"),
    ({"index": [7]}, "the test index must be a whole number 0–59, not [7]"),
    ({"index": 1e300}, "the test index must be a whole number 0–59, not 1e+300"),  # not 300 digits back
    ({"index": 10**30}, "the test index must be a whole number 0–59, not 1000000000000000000000000000000"),
    ({}, "say which image: a test index (0–59), or upload a PNG/JPEG"),
    ({"cls": "cat"}, "say which image: a test index (0–59), or upload a PNG/JPEG"),
    ("index=60", "test image 60 does not exist (0–59)"),
    ("index=-3", "test index -3 is negative: test images are numbered 0–59"),
    ("index=x", 'the test index must be a whole number 0–59, not "x"'),
]


@pytest.mark.parametrize("sent, message", BAD_INDEX, ids=[str(b) for b, _ in BAD_INDEX])
def test_each_bad_index_gets_its_own_message(sent, message):
    c = create_app(lab=synthetic_lab("fast_cnn", 3)).test_client()
    for url in ("/api/analyse", "/api/gradcam", "/api/conv"):  # every call about one image reads it the same way
        query, body = (sent, {}) if isinstance(sent, str) else ("", sent)
        r = c.post(f"{url}?{query}", json={"channel": 0, "i": 0, "j": 0, **body})
        assert (r.status_code, r.get_json()) == (400, {"error": message}), url


def test_the_real_test_split_size_is_in_the_message():
    c = create_app(lab=synthetic_lab("fast_cnn", 10, n=3000)).test_client()
    assert c.post("/api/analyse", json={"index": 2999}).status_code == 200
    for index, message in (
        (3000, "test image 3000 does not exist (0–2999)"),
        (-1, "test index -1 is negative: test images are numbered 0–2999"),
    ):
        r = c.post("/api/analyse", json={"index": index})
        assert (r.status_code, r.get_json()) == (400, {"error": message})


def test_other_bad_input_gets_its_own_message(client):
    c, lab = client
    r = c.post("/api/analyse", json={"image": "not base64!"})
    assert r.status_code == 400 and r.get_json()["error"].startswith("the image sent back is not readable")
    r = c.post("/api/analyse", json={"image": base64.b64encode(b"text").decode()})  # base64, but no picture
    assert (r.status_code, r.get_json()["error"]) == (
        400,
        "not a PNG or JPEG image (the file could not be read as a picture)",
    )
    r = c.post("/api/conv", json={"index": 0, "channel": 1.5, "i": 0, "j": 0})
    assert (r.status_code, r.get_json()["error"]) == (
        400,
        "give channel, i and j of the first conv layer's output (whole numbers)",
    )
    r = c.get("/api/images?page=two")
    assert (r.status_code, r.get_json()["error"]) == (400, "page must be a whole number, not 'two'")
    pages = c.get("/api/images").get_json()["pages"]
    for query, message in (
        (f"page={pages}", f"page={pages}: out of range; these {len(lab.test_y)} images fill pages 0–{pages - 1}"),
        ("page=-5", f"page=-5: out of range; these {len(lab.test_y)} images fill pages 0–{pages - 1}"),
        ("per=0", "per=0: 1 to 500 images a page"),
        ("per=100000", "per=100000: 1 to 500 images a page"),  # every test image in one answer
        ("which=foo", "which='foo': allowed all, right or wrong"),
        ("order=best", "order='best': allowed index, most or least"),
    ):
        r = c.get(f"/api/images?{query}")
        assert (r.status_code, r.get_json()["error"]) == (400, message), query
    assert c.get(f"/api/images?page={pages - 1}").status_code == 200
    r = c.post("/api/analyse", json={"image": 123})
    assert (r.status_code, r.get_json()["error"]) == (400, "the image sent back must be base64 PNG text, not 123")
    r = c.post("/api/gradcam", json={"index": 5})
    assert (r.status_code, r.get_json()["error"]) == (400, f"say which class: cls, one of {', '.join(lab.classes)}")


def test_unknown_addresses_and_methods_answer_one_json_line(client):
    """Not Flask's HTML page: the page and scripts read `error` from every answer."""
    c, _ = client
    r = c.get("/api/nope")
    assert r.status_code == 404 and r.is_json
    msg = r.get_json()["error"]
    assert msg.startswith("/api/nope: no such address; the explorer answers /, /page/<file> and /api/analyse, ")
    assert "/api/info" in msg and "\n" not in msg
    r = c.get("/api/analyse")  # a POST-only address
    assert (r.status_code, r.get_json()["error"]) == (405, "/api/analyse: GET is not allowed here; use POST")


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


@pytest.mark.parametrize("damage", ["another split", "cut short", "not predictions"])
def test_predictions_that_are_not_this_test_splits_are_a_409(repo, tmp_path, damage):
    """plots/eval/predictions.csv from another run (more rows), cut short, or another file: one line
    (409) on every page, not a 500 on some and wrong numbers on others."""
    other = tmp_path / "other"
    for rel in ("models/best.pt", "data/subset.pt", "plots/eval/predictions.csv"):
        (other / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo / rel, other / rel)
    csv = other / "plots/eval/predictions.csv"
    lines = csv.read_text().splitlines(keepends=True)
    csv.write_text(
        {
            "another split": "".join(lines + lines[1:]),
            "cut short": "".join(lines[:23]),
            "not predictions": "a,b\n1,2\n",
        }[damage]
    )
    c = create_app(root=other).test_client()
    for r in (c.get("/api/info"), c.get("/api/images?page=1"), c.post("/api/analyse", json={"index": 0})):
        error = r.get_json()["error"]
        assert r.status_code == 409 and error.startswith(f"{csv}: not this test split's predictions; run")


def test_unreadable_recorded_responses_are_computed_afresh(repo, tmp_path):
    lab = compute.Lab.load(repo)
    (tmp_path / "models").mkdir()
    (tmp_path / "models/test_responses.pt").write_bytes(b"not a torch file")
    assert compute.recorded_responses(tmp_path, lab) is None


def test_the_port_is_checked(monkeypatch):
    from src.explorer import app

    def no_server(root):
        raise AssertionError("a server would start")

    monkeypatch.setattr(app, "create_app", no_server)
    for bad in ("99999", "-1", "0", "http"):
        with pytest.raises(SystemExit) as e:
            app.main(["--port", bad])
        assert e.value.code == 2
    for good in ("1", "8000", "65535"):  # every port a user may pick is taken as it is
        assert app._port(good) == int(good)


def test_a_root_that_is_not_the_project_is_one_line(monkeypatch, tmp_path, capsys):
    """A mistyped --root used to start the server, whose pages then said to train first."""
    from src.explorer import app

    served = []
    monkeypatch.setattr(app, "create_app", lambda root: served.append(root) or pytest.fail("a server would start"))
    for root in (tmp_path / "no-such-folder", tmp_path):
        assert app.main(["--root", str(root)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"explore: error: --root {root}: not this project's repository (no dvc.yaml there)"]
    assert served == []


def test_a_host_the_server_cannot_listen_on_is_one_line(monkeypatch, capsys):
    """A mistyped --host printed only the OS's "Name or service not known" after Flask's banner."""
    from src.explorer import app

    monkeypatch.setattr(app, "create_app", lambda root: pytest.fail("a server would start"))
    for host, why in (("999.1.1.1", ""), ("192.0.2.1", "Cannot assign requested address")):  # 192.0.2.1: TEST-NET
        assert app.main(["--host", host, "--root", str(REPO)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"explore: error: --host {host}: {why}"), err
        assert err[0].endswith("; allowed: an address of this machine")
    assert app._unusable("127.0.0.1") is None


def test_a_port_another_program_listens_on_is_one_line(monkeypatch, capsys):
    """A busy --port printed the URL as if it served, then Werkzeug's two lines."""
    import errno
    import socket

    from src.explorer import app

    monkeypatch.setattr(app, "create_app", lambda root: pytest.fail("a server would start"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert app.main(["--port", str(port), "--root", str(REPO)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.strip().splitlines() == [
        f"explore: error: --port {port}: Address already in use (another program, or an explorer already running, "
        f"listens there); try another, e.g. --port {port + 1}"
    ]
    # not every port the bind refuses is taken: a normal user's port 80
    denied = app._port_trouble(PermissionError(errno.EACCES, "Permission denied"), 80)
    assert (
        denied
        == "--port 80: Permission denied (ports below 1024 need administrator rights); try another, e.g. --port 81"
    )


def test_the_filters_view_on_the_trained_model(repo):
    c = create_app(root=repo).test_client()
    layers = c.get("/api/filters").get_json()
    vis = json.loads((repo / "plots/visualize.json").read_text())["top_patches"]
    assert [layer["layer"] for layer in layers] == list(vis)
    for layer in layers:  # the page shows what the visualize stage's figure shows
        assert [r["channel"] for r in layer["rows"]] == vis[layer["layer"]]["channels"]
        assert [[p["index"] for p in r["patches"]] for r in layer["rows"]] == vis[layer["layer"]]["images"]
    assert layers[0]["learned"] is False  # fast_cnn's whitening layer


def test_the_filters_view_takes_the_evaluate_stages_responses(repo, tmp_path, monkeypatch):
    from src.teach import probe

    lab = compute.Lab.load(repo)
    recorded = compute.recorded_responses(repo, lab)
    assert recorded is not None  # models/test_responses.pt, written by evaluate for this model
    passes = []
    own_pass = probe.top_patches
    monkeypatch.setattr(probe, "top_patches", lambda *a, **kw: passes.append(1) or own_pass(*a, **kw))
    picked = compute.filters(lab, responses=recorded)
    assert passes == []  # no pass over the test split of its own
    own = compute.filters(lab)
    assert passes == [1]
    assert [[r["channel"] for r in layer["rows"]] for layer in picked] == [
        [r["channel"] for r in layer["rows"]] for layer in own
    ]
    assert [[[p["index"] for p in r["patches"]] for r in layer["rows"]] for layer in picked] == [
        [[p["index"] for p in r["patches"]] for r in layer["rows"]] for layer in own
    ]
    # another model's file (or none) is not used: the page makes its own pass
    other = tmp_path / "other"
    (other / "models").mkdir(parents=True)
    assert compute.recorded_responses(other, lab) is None
    torch.save({**recorded, "fingerprint": "another model"}, other / "models/test_responses.pt")
    assert compute.recorded_responses(other, lab) is None
