"""AutoAugment (CIFAR10 policy) for a whole uint8 batch at once, per image, on the batch's device.

torchvision's `v2.AutoAugment(AutoAugmentPolicy.CIFAR10)` draws, for one image: one of the 25
sub-policies; for each of its two operations a coin (applied when rand <= p) and, for signed
operations, a sign (negative when rand <= 0.5); then applies the operations in order. Here every
image of a batch draws its own sub-policy, coins and signs from the step's generator, and each
operation is applied at once to the images that drew it:

    geometric (shear, translate, rotate): one grid_sample of the batch, each image with its own grid
    colour: tensor ops with per-image factors (blends), bit masks (posterize), thresholds (solarize)

The arithmetic follows torchvision.transforms.v2.functional step by step (same float32 operations,
nearest sampling on the same grids), so a batched image equals torchvision's output for the same
draws; tests/test_autoaugment.py checks every operation and magnitude bin against it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

NUM_BINS = 10
# The CIFAR10 policy, as in torchvision (AutoAugmentPolicy.CIFAR10): (operation, probability, magnitude bin)
CIFAR10_POLICY: tuple[tuple[tuple[str, float, int | None], tuple[str, float, int | None]], ...] = (
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
    (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
    (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
)
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
BLENDS = ("Brightness", "Color", "Contrast", "Sharpness")
OPS = (*GEOMETRIC, *BLENDS, "Posterize", "Solarize", "AutoContrast", "Equalize", "Invert")
SIGNED = set(GEOMETRIC) | set(BLENDS)


def magnitudes(op: str, height: int = 32, width: int = 32) -> torch.Tensor | None:
    """torchvision's magnitude of each of the 10 bins of `op` (None: the operation has none)."""
    space = {
        "ShearX": lambda: torch.linspace(0.0, 0.3, NUM_BINS),
        "ShearY": lambda: torch.linspace(0.0, 0.3, NUM_BINS),
        "TranslateX": lambda: torch.linspace(0.0, 150.0 / 331.0 * width, NUM_BINS),
        "TranslateY": lambda: torch.linspace(0.0, 150.0 / 331.0 * height, NUM_BINS),
        "Rotate": lambda: torch.linspace(0.0, 30.0, NUM_BINS),
        **{b: (lambda: torch.linspace(0.0, 0.9, NUM_BINS)) for b in BLENDS},
        "Posterize": lambda: (8 - (torch.arange(NUM_BINS) / ((NUM_BINS - 1) / 4))).round().int(),
        "Solarize": lambda: torch.linspace(1.0, 0.0, NUM_BINS),
    }
    return space[op]() if op in space else None


def signed_magnitude(op: str, bin_: int, negative: bool, height: int = 32, width: int = 32) -> float:
    """The magnitude torchvision applies for this bin and sign (0.0 for operations without one)."""
    m = magnitudes(op, height, width)
    if m is None:
        return 0.0
    value = float(m[bin_])
    return -value if negative and op in SIGNED else value


# ----------------------------------------------------------------------------- geometry


def _inverse_affine(
    center: tuple[float, float], angle: float, translate: tuple[float, float], shear: tuple[float, float]
) -> list[float]:
    """The inverse affine matrix (scale 1) that torchvision samples with, in float64 as it computes it."""
    rot, sx, sy = math.radians(angle), math.radians(shear[0]), math.radians(shear[1])
    cx, cy = center
    tx, ty = translate
    a = math.cos(rot - sy) / math.cos(sy)
    b = -(a * math.tan(sx) + math.sin(rot))
    c = math.sin(rot - sy) / math.cos(sy)
    d = math.cos(rot) - c * math.tan(sx)
    m = [d, -b, 0.0, -c, a, 0.0]
    m[2] += cx - m[0] * (cx + tx) - m[1] * (cy + ty)
    m[5] += cy - m[3] * (cx + tx) - m[4] * (cy + ty)
    return m


def geometry_matrix(op: str, magnitude: float, height: int, width: int) -> list[float]:
    """The inverse affine matrix of a geometric operation, as torchvision's affine/rotate build it."""
    if op in ("ShearX", "ShearY"):  # torchvision shears about the top-left corner
        shear = math.degrees(math.atan(magnitude))
        return _inverse_affine(
            (-width * 0.5, -height * 0.5), 0.0, (0.0, 0.0), (shear, 0.0) if op == "ShearX" else (0.0, shear)
        )
    if op == "TranslateX":
        return _inverse_affine((0.0, 0.0), 0.0, (float(int(magnitude)), 0.0), (0.0, 0.0))
    if op == "TranslateY":
        return _inverse_affine((0.0, 0.0), 0.0, (0.0, float(int(magnitude))), (0.0, 0.0))
    return _inverse_affine((0.0, 0.0), -(magnitude % 360), (0.0, 0.0), (0.0, 0.0))  # Rotate


def sampling_grid(matrix: list[float], height: int, width: int, device: torch.device) -> torch.Tensor:
    """grid_sample's grid (1, H, W, 2) for an inverse affine matrix, built with torchvision's steps."""
    theta = torch.tensor(matrix, dtype=torch.float32, device=device).reshape(1, 2, 3)
    base = torch.empty(1, height, width, 3, dtype=torch.float32, device=device)
    base[..., 0].copy_(torch.linspace((1.0 - width) * 0.5, (width - 1.0) * 0.5, steps=width, device=device))
    base[..., 1].copy_(
        torch.linspace((1.0 - height) * 0.5, (height - 1.0) * 0.5, steps=height, device=device).unsqueeze_(-1)
    )
    base[..., 2].fill_(1)
    scaled = theta.transpose(1, 2).div_(torch.tensor([0.5 * width, 0.5 * height], device=device))
    return base.view(1, height * width, 3).bmm(scaled).view(1, height, width, 2)


# ----------------------------------------------------------------------------- colour, per-image factors


def _per_image(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def _blend(x: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
    """x·ratio + other·(1 − ratio), clamped to [0, 255], truncated to uint8 (torchvision's _blend;
    addcmul rounds as its add-with-alpha does, so the results are bit for bit the same)."""
    return torch.addcmul(x.float() * _per_image(ratio), other, _per_image(rest)).clamp_(0, 255).to(torch.uint8)


def _grey(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(dim=-3)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(-3).floor_()  # (B, 1, H, W)


def brightness(x, ratio, rest):
    return (x.float() * _per_image(ratio)).clamp_(0, 255).to(torch.uint8)


def color(x, ratio, rest):
    return _blend(x, _grey(x), ratio, rest)


def contrast(x, ratio, rest):
    return _blend(x, _grey(x).mean(dim=(-3, -2, -1), keepdim=True), ratio, rest)


def sharpness(x, ratio, rest):
    """Blend with a 3x3 smoothing of the image; the one-pixel border stays as it is."""
    out = x.float()
    kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], device=x.device) / 13.0
    blurred = F.conv2d(out, kernel.expand(3, 1, 3, 3), groups=3).round_()
    inner = out[..., 1:-1, 1:-1]
    inner.addcmul_(blurred - inner, _per_image(rest))
    return out.clamp_(0, 255).to(torch.uint8)


def posterize(x, mask):
    return x & _per_image(mask)


def solarize(x, threshold):
    return torch.where(x.float() >= _per_image(threshold), x.bitwise_not(), x)


def autocontrast(x):
    """Stretch each channel of each image to [0, 255] (a flat channel is left as it is)."""
    f = x.float()
    lo, hi = f.amin(dim=(-2, -1), keepdim=True), f.amax(dim=(-2, -1), keepdim=True)
    flat = hi == lo
    inv_scale = torch.where(flat, 1.0, (hi - lo).mul_(1.0 / 255))
    return f.sub_(torch.where(flat, 0.0, lo)).div_(inv_scale).clamp_(0, 255).to(torch.uint8)


def equalize(x):
    """Histogram equalisation of each channel of each image (torchvision's batched kernel)."""
    from torchvision.transforms.v2.functional import equalize as tv_equalize

    return tv_equalize(x)


def invert(x):
    return x.bitwise_not()


# ----------------------------------------------------------------------------- the policy on a batch


class AutoAugmentCIFAR10:
    """The CIFAR10 AutoAugment policy applied per image to uint8 batches (B, 3, H, W).

    Tables (each sub-policy's operations and probabilities, each operation's per-bin magnitudes and
    sampling grids) are built once per image size and device. `sync_free` applies every operation to
    the whole batch and keeps it where drawn (no device-to-host wait, for a GPU); otherwise the
    images that drew an operation are gathered first (less work, for a CPU). Both give the same images.
    """

    def __init__(self, sync_free: bool | None = None):
        self.sync_free = sync_free
        self._tables: dict[tuple, dict] = {}

    def tables(self, height: int, width: int, device: torch.device) -> dict:
        key = (height, width, str(device))
        if key not in self._tables:
            self._tables[key] = self._build(height, width, device)
        return self._tables[key]

    @staticmethod
    def _build(height: int, width: int, device: torch.device) -> dict:
        op_id = torch.tensor([[OPS.index(op) for op, _, _ in sub] for sub in CIFAR10_POLICY], device=device)
        prob = torch.tensor([[p for _, p, _ in sub] for sub in CIFAR10_POLICY], device=device)
        bins = torch.tensor([[b or 0 for _, _, b in sub] for sub in CIFAR10_POLICY], device=device)
        value = {
            op: [[signed_magnitude(op, b, neg, height, width) for neg in (False, True)] for b in range(NUM_BINS)]
            for op in OPS
        }  # (bin, negative) → magnitude, float64
        grids = [
            sampling_grid(geometry_matrix(op, value[op][b][neg], height, width), height, width, device)
            for op in GEOMETRIC
            for b in range(NUM_BINS)
            for neg in (0, 1)
        ]
        f32 = lambda rows: torch.tensor(rows, dtype=torch.float32, device=device)  # noqa: E731
        return {
            "op": op_id,
            "prob": prob,
            "bin": bins,
            "grids": torch.cat(grids),  # (5·10·2, H, W, 2)
            "ratio": {op: f32([[1.0 + v for v in row] for row in value[op]]) for op in BLENDS},
            "rest": {op: f32([[1.0 - (1.0 + v) for v in row] for row in value[op]]) for op in BLENDS},
            "mask": torch.tensor(
                [[((1 << int(v)) - 1) << (8 - int(v)) for v in row] for row in value["Posterize"]],
                dtype=torch.uint8,
                device=device,
            ),
            "threshold": f32([[255.0 * v for v in row] for row in value["Solarize"]]),
        }

    def draw(self, n: int, gen: torch.Generator, device: torch.device) -> dict:
        """Each image's sub-policy, the coins of its two operations and their signs."""
        rand = lambda *shape: torch.rand(*shape, generator=gen, device=gen.device).to(device)  # noqa: E731
        sub = torch.randint(len(CIFAR10_POLICY), (n,), generator=gen, device=gen.device).to(device)
        return {"sub": sub, "coin": rand(n, 2), "sign": rand(n, 2)}

    def __call__(self, x: torch.Tensor, gen: torch.Generator, draws: dict | None = None) -> torch.Tensor:
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected uint8 images (B, 3, H, W), got {x.dtype} {tuple(x.shape)}")
        t = self.tables(x.shape[-2], x.shape[-1], x.device)
        d = draws if draws is not None else self.draw(x.shape[0], gen, x.device)
        for slot in (0, 1):  # the sub-policy's two operations, in order
            op, b = t["op"][d["sub"], slot], t["bin"][d["sub"], slot]
            on = d["coin"][:, slot] <= t["prob"][d["sub"], slot]
            neg = (d["sign"][:, slot] <= 0.5).long()
            x = self._geometric(x, t, op, b, neg, on)
            x = self._colour(x, t, op, b, neg, on)
        return x

    def _apply(self, x: torch.Tensor, where: torch.Tensor, fn: Callable, *per_image: torch.Tensor) -> torch.Tensor:
        """fn on the images where `where` is set, the others unchanged."""
        sync_free = self.sync_free if self.sync_free is not None else x.device.type != "cpu"
        if sync_free:  # every image through fn, kept where drawn: no host needs to know how many
            return torch.where(_per_image(where), fn(x, *per_image), x)
        idx = where.nonzero().squeeze(1)
        if idx.numel() == 0:
            return x
        out = x.clone()
        out[idx] = fn(x[idx], *(p[idx] for p in per_image))
        return out

    def _geometric(self, x, t, op, b, neg, on) -> torch.Tensor:
        geo = on & (op < len(GEOMETRIC))
        which = (op.clamp(max=len(GEOMETRIC) - 1) * NUM_BINS + b) * 2 + neg  # row of t["grids"]

        def sample(imgs: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            out = F.grid_sample(
                imgs.float(), t["grids"][rows], mode="nearest", padding_mode="zeros", align_corners=False
            )
            return out.round_().to(torch.uint8)

        return self._apply(x, geo, sample, which)

    def _colour(self, x, t, op, b, neg, on) -> torch.Tensor:
        for name, fn in (
            ("Brightness", brightness),
            ("Color", color),
            ("Contrast", contrast),
            ("Sharpness", sharpness),
        ):
            x = self._apply(x, on & (op == OPS.index(name)), fn, t["ratio"][name][b, neg], t["rest"][name][b, neg])
        x = self._apply(x, on & (op == OPS.index("Posterize")), posterize, t["mask"][b, 0])
        x = self._apply(x, on & (op == OPS.index("Solarize")), solarize, t["threshold"][b, 0])
        for name, fn in (("AutoContrast", autocontrast), ("Equalize", equalize), ("Invert", invert)):
            x = self._apply(x, on & (op == OPS.index(name)), fn)
        return x


def torchvision_reference(x: torch.Tensor, draws: dict) -> torch.Tensor:
    """The same draws applied image by image with torchvision's own AutoAugment operations: the
    reference the tests and the benchmark compare the batched version against (slow: a Python loop)."""
    from torchvision.transforms import v2

    tv = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
    out = []
    for i, img in enumerate(x.cpu()):
        for slot, (op, p, b) in enumerate(CIFAR10_POLICY[int(draws["sub"][i])]):
            if float(draws["coin"][i, slot]) <= p:
                m = signed_magnitude(op, b or 0, float(draws["sign"][i, slot]) <= 0.5, x.shape[-2], x.shape[-1])
                img = tv._apply_image_or_video_transform(img, op, m, v2.InterpolationMode.NEAREST, tv._fill)
        out.append(img)
    return torch.stack(out).to(x.device)
