"""What the explorer page shows, computed: the model of models/best.pt on the test split or an
uploaded picture — class probabilities, every layer's feature maps, Grad-CAM, one first-layer
output as a weighted sum, a class's confusion row and mistakes, the patches that excite each
channel most. Plain functions over a loaded `Lab`; src/explorer/app.py serves them over HTTP.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from src import paths
from src.data.cifar import Subset, normalize
from src.errors import CheckpointError, DataError
from src.training.checkpoints import load_trained
from src.training.evaluation import read_predictions

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_UPLOAD_PIXELS = 50_000_000  # a 48-megapixel phone photo; decoded as RGB, 150 MB
MAX_PER_PAGE = 500  # test images in one answer of /api/images (the page asks 48)


class InputError(ValueError):
    """Input the page sent that can't be used; the message is shown on the page."""


@dataclass
class Lab:
    """A trained model with the data and predictions it goes with."""

    model: nn.Module
    classes: list[str]
    mean: torch.Tensor
    std: torch.Tensor
    test_x: torch.Tensor  # (N, 3, 32, 32) uint8
    test_y: np.ndarray
    pred: np.ndarray  # the evaluate stage's predictions (with its test-time augmentation)
    conf: np.ndarray
    model_name: str

    @classmethod
    def load(cls, root: Path = Path(".")) -> Lab:
        """models/best.pt, data/subset.pt and plots/eval/predictions.csv under `root`; a clear
        CheckpointError/DataError when one is missing or they do not belong together."""
        best, subset = root / paths.BEST, root / paths.SUBSET
        if not best.exists() or not subset.exists():
            raise CheckpointError(f"no trained model yet: run `dvc repro` first (it writes {paths.BEST})")
        sub = Subset.load(subset)
        model, ck = load_trained(best, sub.classes)
        true, pred, conf = read_predictions(root / paths.PREDICTIONS, sub.classes, sub.test_y.numpy())
        return cls(
            model.eval(),
            sub.classes,
            torch.tensor(ck["mean"]),
            torch.tensor(ck["std"]),
            sub.test_x,
            true,
            pred,
            conf,
            ck["model_name"],
        )

    def normalised(self, img: torch.Tensor) -> torch.Tensor:
        return normalize(img[None], self.mean, self.std)[0]


# ----------------------------------------------------------------------------- pictures as PNG text


def png(rgb: np.ndarray) -> str:
    """(H, W, 3) uint8 → base64 PNG text for an <img src="data:image/png;base64,...">."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def to_hwc(img: torch.Tensor) -> np.ndarray:
    return img.permute(1, 2, 0).numpy()


def decode_upload(data: bytes) -> torch.Tensor:
    """A PNG or JPEG file → the 32×32 uint8 image (3, 32, 32) the network sees (resized whole,
    Lanczos). Anything else is an InputError with a message for the page."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > MAX_UPLOAD_BYTES:
        raise InputError(f"the file is {len(data) / 2**20:.1f} MB; at most {MAX_UPLOAD_BYTES // 2**20} MB")
    limit = min(MAX_UPLOAD_PIXELS, Image.MAX_IMAGE_PIXELS or MAX_UPLOAD_PIXELS)
    try:
        im = Image.open(io.BytesIO(data))  # reads the header (a PNG's chunks up to its pixels)
    except Image.DecompressionBombError:  # Pillow's own refusal, over twice its MAX_IMAGE_PIXELS
        raise InputError(f"the image has too many pixels; at most {limit:,}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        kind = "PNG" if data.startswith(b"\x89PNG\r\n\x1a\n") else "JPEG" if data.startswith(b"\xff\xd8\xff") else None
        if kind:  # its first bytes say what it is: damaged, not something else
            why = "Pillow cannot identify it" if isinstance(exc, UnidentifiedImageError) else str(exc)[:80]
            raise InputError(f"a damaged {kind} file: it could not be read ({why})") from None
        raise InputError("not a PNG or JPEG image (the file could not be read as a picture)") from None
    kind = "JPEG" if im.format == "MPO" else im.format  # a camera's JPEG with its extra frames (Pillow: MPO)
    if kind not in ("PNG", "JPEG"):
        raise InputError(f"a {im.format} file: upload a PNG or JPEG image")
    if im.width * im.height > limit:  # before decoding: a small file can unpack to gigabytes
        raise InputError(f"the image has too many pixels ({im.width}×{im.height}); at most {limit:,}")
    try:
        if im.mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit grey: convert("RGB") would clip it at 255
            im = Image.fromarray((np.asarray(im, dtype=np.float64) / 257).round().clip(0, 255).astype(np.uint8))
        im = im.convert("RGB").resize((32, 32), Image.Resampling.LANCZOS)
    except (OSError, ValueError, SyntaxError) as exc:  # cut short, a bad chunk, text that unpacks too large
        raise InputError(f"a damaged {kind} file: it could not be read to the end ({str(exc)[:80]})") from None
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).contiguous()


def decode_png32(text: str) -> torch.Tensor:
    """The 32×32 image the page holds (a PNG it received from us) back to a tensor."""
    if not isinstance(text, str):
        raise InputError(f"the image sent back must be base64 PNG text, not {json.dumps(text, default=str)[:40]}")
    try:
        data = base64.b64decode(text, validate=True)
    except (ValueError, TypeError) as exc:  # binascii.Error is a ValueError; a non-string a TypeError
        raise InputError(f"the image sent back is not readable ({exc})") from None
    return decode_upload(data)  # outside the try: its own InputError (a ValueError too) keeps its message


# ----------------------------------------------------------------------------- picking test images


def list_images(
    lab: Lab, cls: str | None = None, which: str = "all", order: str = "index", page: int = 0, per_page: int = 48
) -> dict:
    """Test images of a class (or all), right or wrong ones, by index or by confidence, a page at a time."""
    if cls not in (None, "", *lab.classes):
        raise InputError(f"unknown class {cls!r}; this model knows {', '.join(lab.classes)}")
    if which not in ("all", "right", "wrong"):
        raise InputError(f"which={which[:40]!r}: allowed all, right or wrong")
    if order not in ("index", "most", "least"):
        raise InputError(f"order={order[:40]!r}: allowed index, most or least")
    if not 1 <= per_page <= MAX_PER_PAGE:  # every test image in one answer is megabytes of PNGs
        raise InputError(f"per={per_page}: 1 to {MAX_PER_PAGE} images a page")
    keep = np.ones(len(lab.test_y), dtype=bool)
    if cls:
        keep &= lab.test_y == lab.classes.index(cls)
    if which != "all":
        keep &= (lab.pred == lab.test_y) == (which == "right")
    idx = np.flatnonzero(keep)
    if order != "index":
        idx = idx[np.argsort(-lab.conf[idx] if order == "most" else lab.conf[idx], kind="stable")]
    pages = max(1, math.ceil(len(idx) / per_page))
    if not 0 <= page < pages:
        raise InputError(f"page={page}: out of range; these {len(idx)} images fill pages 0–{pages - 1}")
    items = [
        {
            "index": int(i),
            "label": lab.classes[lab.test_y[i]],
            "pred": lab.classes[lab.pred[i]],
            "conf": round(float(lab.conf[i]), 4),
            "png": png(to_hwc(lab.test_x[i])),
        }
        for i in idx[page * per_page : (page + 1) * per_page]
    ]
    return {"total": int(len(idx)), "page": page, "pages": pages, "items": items}


def whole_number(value: object) -> int | None:
    """An int sent as JSON or in a query string (7, 7.0, "7"); None for anything else (3.5, "abc", true, null)."""
    if isinstance(value, bool):  # bool is an int subclass: `true` is not test image 1
        return None
    if isinstance(value, int):
        return value if abs(value) < 10**18 else None  # as the strings: JSON may send 1e300 or 300 digits
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e18:
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d{1,18}\s*", value):
        return int(value)
    return None


def test_index(lab: Lab, value: object) -> int:
    """The test index the page sent, checked: one message each for a non-integer, a negative and a too large one."""
    last = len(lab.test_y) - 1
    index = whole_number(value)
    if index is None:
        shown = json.dumps(value, ensure_ascii=False, default=str)
        raise InputError(f"the test index must be a whole number 0–{last}, not {shown[:40]}")
    if index < 0:
        raise InputError(f"test index {index} is negative: test images are numbered 0–{last}")
    if index > last:
        raise InputError(f"test image {index} does not exist (0–{last})")
    return index


def test_image(lab: Lab, index: int) -> torch.Tensor:
    return lab.test_x[test_index(lab, index)]


# ----------------------------------------------------------------------------- one image through the network


def _mosaic(a: torch.Tensor, cmap: str = "viridis") -> tuple[str, int, int]:
    """Every channel of an activation (C, H, W), each scaled on its own, in a grid with 1-px gaps."""
    import matplotlib

    c, h, w = a.shape
    cols = math.ceil(math.sqrt(c))
    rows = math.ceil(c / cols)
    lo = a.flatten(1).min(1).values[:, None, None]
    hi = a.flatten(1).max(1).values[:, None, None]
    unit = ((a - lo) / (hi - lo).clamp_min(1e-12)).numpy()
    rgb = (matplotlib.colormaps[cmap](unit)[..., :3] * 255).astype(np.uint8)  # (C, H, W, 3)
    grid = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1, 3), 255, dtype=np.uint8)
    for k in range(c):
        r, q = divmod(k, cols)
        grid[r * (h + 1) : r * (h + 1) + h, q * (w + 1) : q * (w + 1) + w] = rgb[k]
    return png(grid), rows, cols


@torch.no_grad()
def analyse(lab: Lab, img: torch.Tensor, index: int | None = None) -> dict:
    """Class probabilities and every feature layer's maps (all channels) for one uint8 image (one pass,
    no test-time augmentation); for test image `index` also its true class, whether the prediction is
    right, and the evaluate stage's prediction that the lists show (None for an upload)."""
    from src.figures.inside import activations
    from src.models import conv_layers

    x = lab.normalised(img)[None]
    probs = lab.model(x).float().softmax(1)[0]
    first, _ = conv_layers(lab.model)[0]
    conv_out = activations(lab.model, x, [first])[first][0]  # (C, H, W): the page draws one channel to click
    layers = []
    for name, a in activations(lab.model, x, lab.model.feature_layers()).items():
        mosaic, rows, cols = _mosaic(a[0])
        layers.append({"name": name, "shape": list(a.shape[1:]), "mosaic": mosaic, "rows": rows, "cols": cols})
    p = probs.tolist()
    pred = lab.classes[int(np.argmax(p))]
    true = None if index is None else lab.classes[int(lab.test_y[index])]
    return {
        "image": png(to_hwc(img)),
        "probs": [{"class": c, "p": round(v, 6)} for c, v in zip(lab.classes, p)],
        "pred": pred,
        "index": index,
        "true_class": true,
        "correct": None if true is None else pred == true,
        # the lists' verdict: the evaluate stage's prediction, with its test-time augmentation
        "stage_pred": None if index is None else lab.classes[int(lab.pred[index])],
        "layers": layers,
        "first_conv": {"name": first, "shape": list(conv_out.shape), "maps": conv_out.round(decimals=3).tolist()},
    }


def gradcam(lab: Lab, img: torch.Tensor, cls: str) -> dict:
    """Grad-CAM from the last conv layer for class `cls`, over the image (both 32×32)."""
    import matplotlib

    from src.figures.inside import gradcam_maps

    if cls in ("", None):
        raise InputError(f"say which class: cls, one of {', '.join(lab.classes)}")
    if cls not in lab.classes:
        raise InputError(f"unknown class {cls!r}; this model knows {', '.join(lab.classes)}")
    cam = gradcam_maps(lab.model, lab.normalised(img)[None], [lab.classes.index(cls)])[0]  # (H, W) in [0, 1]
    heat = matplotlib.colormaps["jet"](cam)[..., :3]
    over = (0.55 * to_hwc(img) / 255 + 0.45 * heat).clip(0, 1)
    return {"class": cls, "png": png((over * 255).astype(np.uint8)), "peak": round(float(cam.max()), 4)}


def conv_sum(lab: Lab, img: torch.Tensor, channel: int, i: int, j: int) -> dict:
    """One output of the first conv layer written out: receptive field, terms, from-scratch sum, PyTorch."""
    from src.teach import probe

    conv = next(m for m in lab.model.modules() if isinstance(m, nn.Conv2d))
    out = probe.conv_sum(lab.model, lab.normalised(img), 0, 0, 0)["out_shape"]
    if not (0 <= channel < conv.out_channels and 0 <= i < out[1] and 0 <= j < out[2]):
        raise InputError(f"position ({channel}, {i}, {j}) is outside the layer's output {tuple(out)}")
    r = probe.conv_sum(lab.model, lab.normalised(img), channel, i, j)
    terms = [
        {
            "c": c,
            "u": u,
            "v": v,
            "w": round(float(r["weights"][c, u, v]), 4),
            "x": round(float(r["window"][c, u, v]), 4),
        }
        for c in range(r["window"].shape[0])
        for u in range(r["kernel"])
        for v in range(r["kernel"])
    ]
    return {
        "layer": r["layer"],
        "channel": channel,
        "i": i,
        "j": j,
        "box": list(r["box"]),
        "kernel": r["kernel"],
        "padding": r["padding"],
        "stride": r["stride"],
        "bias": round(r["bias"], 4),
        "terms": terms,
        "sum": f"{r['sum']:.4f}",
        "torch": f"{r['torch']:.4f}",
        "out_shape": list(r["out_shape"]),
    }


def class_view(lab: Lab, cls: str, mistakes: int = 12) -> dict:
    """A class's row of the confusion matrix and its most confident mistakes."""
    if cls not in lab.classes:
        raise InputError(f"unknown class {cls!r}; this model knows {', '.join(lab.classes)}")
    c = lab.classes.index(cls)
    mine = lab.test_y == c
    row = {name: int(((lab.pred == k) & mine).sum()) for k, name in enumerate(lab.classes)}
    wrong = np.flatnonzero(mine & (lab.pred != c))
    worst = wrong[np.argsort(-lab.conf[wrong], kind="stable")][:mistakes]
    return {
        "class": cls,
        "images": int(mine.sum()),
        "row": row,
        "accuracy": round(row[cls] / max(int(mine.sum()), 1), 4),
        "mistakes": [
            {
                "index": int(i),
                "pred": lab.classes[lab.pred[i]],
                "conf": round(float(lab.conf[i]), 4),
                "png": png(to_hwc(lab.test_x[i])),
            }
            for i in worst
        ],
    }


def recorded_responses(root: Path, lab: Lab) -> dict | None:
    """The evaluate stage's models/test_responses.pt under `root` when it was recorded for this
    lab's model and test split (its fingerprint matches); None when missing, unreadable or stale."""
    from src.teach.probe import read_responses

    try:
        return read_responses(root / paths.TEST_RESPONSES, lab.model, lab.test_x)
    except DataError:  # missing, cut short, another file or stale: computed afresh
        return None


def filters(lab: Lab, k: int = 6, channels: int = 6, responses: dict | None = None) -> list[dict]:
    """Per conv layer: the test patches (receptive fields) that excite its most responsive channels
    most; picked from the evaluate stage's `responses` (`recorded_responses`) when given, as the
    visualize stage does, else from a pass over the test split of its own."""
    from src.teach.probe import KEPT, crop, select_patches, top_patches

    x = normalize(lab.test_x, lab.mean, lab.std)
    if responses is not None and k <= KEPT:
        found = select_patches(lab.model, responses, k, channels, x.shape[-1])
    else:
        found = top_patches(lab.model, x, k, channels)
    out = []
    for t in found:
        rows = [
            {
                "channel": ch,
                "patches": [
                    {
                        "index": int(t.images[r, q]),
                        "value": round(float(t.values[r, q]), 3),
                        "png": png(crop(lab.test_x[int(t.images[r, q])], t.field.box(*map(int, t.positions[r, q])))),
                    }
                    for q in range(t.images.shape[1])
                ],
            }
            for r, ch in enumerate(t.channels)
        ]
        out.append({"layer": t.layer, "learned": t.learned, "field": t.field.size, "rows": rows})
    return out
