"""src.teach.ops against torch.nn.functional on random cases, bad arguments, and the theory figures'
numbers against the functions that computed them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from src.figures import lessons as TF
from src.teach import ops

RNG = np.random.default_rng(1234)


def _t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


@pytest.mark.parametrize("case", range(40))
def test_conv2d_matches_torch(case):
    rng = np.random.default_rng(case)
    c, o = rng.integers(1, 4), rng.integers(1, 4)
    kh, kw = rng.integers(1, 5), rng.integers(1, 5)
    s, p = int(rng.integers(1, 4)), int(rng.integers(0, 3))
    h, w = rng.integers(max(kh, kw), 12, size=2)
    x = rng.normal(size=(c, h, w))
    wt = rng.normal(size=(o, c, kh, kw))
    b = rng.normal(size=o)
    ours = ops.conv2d(x, wt, b, stride=s, padding=p)
    ref = F.conv2d(_t(x)[None], _t(wt), _t(b), stride=s, padding=p)[0].numpy()
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10)
    assert ours.shape[1] == ops.output_size(int(h), int(kh), p, s)


def test_conv2d_2d_inputs():
    x, w = RNG.normal(size=(6, 7)), RNG.normal(size=(3, 3))
    ref = F.conv2d(_t(x)[None, None], _t(w)[None, None], padding=1)[0, 0].numpy()
    np.testing.assert_allclose(ops.conv2d(x, w, padding=1), ref, rtol=1e-10)
    assert ops.conv2d(x, w, b=2.0).shape == (4, 5)


@pytest.mark.parametrize("case", range(30))
def test_pooling_relu_flatten_match_torch(case):
    rng = np.random.default_rng(100 + case)
    k = int(rng.integers(1, 4))
    s = None if case % 2 else int(rng.integers(1, 4))
    x = rng.normal(size=(int(rng.integers(1, 4)), *rng.integers(k, 11, size=2)))
    np.testing.assert_allclose(ops.max_pool2d(x, k, s), F.max_pool2d(_t(x), k, s).numpy())
    np.testing.assert_allclose(ops.avg_pool2d(x, k, s), F.avg_pool2d(_t(x), k, s).numpy(), rtol=1e-12)
    np.testing.assert_allclose(ops.relu(x), F.relu(_t(x)).numpy())
    np.testing.assert_allclose(ops.global_avg_pool(x), F.adaptive_avg_pool2d(_t(x), 1).numpy().reshape(-1), rtol=1e-12)
    np.testing.assert_array_equal(ops.flatten(x), torch.flatten(_t(x)).numpy())


def test_output_size_formula_and_floor():
    assert ops.output_size(5, 3, 0, 2) == 2
    assert ops.output_size(4, 3, 0, 2) == 1  # the lab caption's 4x4 case: (4-3)/2+1 = 1.5 → 1, as PyTorch
    assert ops.output_size(3, 3, 1, 1) == 3
    assert ops.output_size(32, 5, 2, 1) == 32
    for n, f, p, s in [(7, 3, 1, 2), (10, 4, 0, 3), (9, 2, 1, 2)]:
        assert (
            ops.output_size(n, f, p, s)
            == F.conv2d(torch.zeros(1, 1, n, n), torch.zeros(1, 1, f, f), stride=s, padding=p).shape[-1]
        )


@pytest.mark.parametrize(
    "args,name",
    [
        ((0, 3, 0, 1), "n (input size)"),
        ((5, 0, 0, 1), "f (kernel size)"),
        ((5, 3, -1, 1), "p (padding)"),
        ((5, 3, 0, 0), "s (stride)"),
        ((2, 5, 0, 1), "f (kernel size)"),
        ((5.5, 3, 0, 1), "n (input size)"),
    ],
)
def test_output_size_bad_arguments(args, name):
    with pytest.raises(ValueError, match=rf"^{name.replace('(', '[(]').replace(')', '[)]')}"):
        ops.output_size(*args)


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="w has 2 input channels but x has 3"):
        ops.conv2d(np.zeros((3, 5, 5)), np.zeros((1, 2, 3, 3)))
    with pytest.raises(ValueError, match="stride must be >= 1"):
        ops.conv2d(np.zeros((5, 5)), np.zeros((3, 3)), stride=0)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        ops.conv2d(np.zeros((5, 5)), np.zeros((3, 3)), padding=-1)
    with pytest.raises(ValueError, match="x must be"):
        ops.max_pool2d(np.zeros(5), 2)
    with pytest.raises(ValueError, match="k .window size. must be >= 1"):
        ops.avg_pool2d(np.zeros((4, 4)), 0)


def test_network_tables_match_the_notebook():
    from src.models import build_model
    from tests.conftest import params_with

    rows = ops.layer_table(build_model(params_with({"model": {"name": "seed_cnn"}}).model, 10))
    assert [r["params"] for r in rows if r["params"]] == [
        4800,
        128,
        190400,
        238,
        236691,
        442,
        1414400,
        512,
        589824,
        512,
        1638400,
        512,
        2570,
    ]
    assert all(r["formula_shape"] == r["torch_shape"] for r in rows)
    fast = ops.layer_table(build_model(params_with({"model": {"name": "fast_cnn"}}).model, 10))
    assert fast[0]["torch_shape"] == [24, 31, 31] and all(r["formula_shape"] == r["torch_shape"] for r in fast)


def test_figures_print_the_numbers_the_functions_compute():
    x = RNG.integers(-9, 10, (4, 5)).astype(float)
    fig = TF.relu_figure(x)
    np.testing.assert_array_equal(TF.cell_values(fig.axes[0]), x.ravel())
    np.testing.assert_array_equal(TF.cell_values(fig.axes[1]), ops.relu(x).ravel())

    cx, cw = RNG.integers(0, 10, (5, 5)).astype(float), RNG.integers(-1, 2, (3, 3)).astype(float)
    fig = TF.conv_step_figure(cx, cw, 1.0, (2, 2))  # the last position: the whole map is filled
    np.testing.assert_array_equal(TF.cell_values(fig.axes[2]), ops.relu(ops.conv2d(cx, cw, 1.0)).ravel())
    text = [t.get_text() for t in fig.axes[3].texts if t.get_gid() == "sum"][0]
    z = (cw * cx[2:5, 2:5]).sum() + 1
    assert f"= f({TF.fmt(z)}) = {TF.fmt(max(z, 0))}" in text

    sx, sw = RNG.integers(0, 10, (5, 5)).astype(float), RNG.integers(-1, 2, (3, 3)).astype(float)
    fig = TF.stride_figure(sx, sw, 2)
    out = TF.cell_values(fig.axes[2])
    assert out.size == 4
    np.testing.assert_array_equal(out, ops.conv2d(sx, sw, stride=2).ravel())
    assert "PyTorch gives 1×1" in " ".join(t.get_text() for t in fig.texts)

    px, pw = RNG.integers(1, 10, (3, 3)).astype(float), RNG.integers(-1, 2, (3, 3)).astype(float)
    fig = TF.padding_figure(px, pw, 1)
    np.testing.assert_array_equal(TF.cell_values(fig.axes[0]), ops.pad2d(px, 1).ravel())
    np.testing.assert_array_equal(TF.cell_values(fig.axes[2]), ops.conv2d(px, pw, padding=1).ravel())
    np.testing.assert_array_equal(TF.cell_values(fig.axes[3]), [4, 6, 4, 6, 9, 6, 4, 6, 4])  # outputs fed
    assert "corner 4, centre 9 of 9" in fig._suptitle.get_text()

    fmap = RNG.integers(0, 10, (4, 4)).astype(float)
    stack, small = RNG.integers(0, 10, (3, 3, 3)).astype(float), RNG.integers(0, 10, (2, 2, 2)).astype(float)
    fig = TF.pooling_figure(fmap, stack, small)
    by_title = {ax.get_title(): ax for ax in fig.axes}
    np.testing.assert_array_equal(
        TF.cell_values(by_title["max_pool2d(k=2)\nthe largest of each window"]), ops.max_pool2d(fmap, 2).ravel()
    )
    np.testing.assert_allclose(
        TF.cell_values(by_title["avg_pool2d(k=2)\nthe mean of each window"]), ops.avg_pool2d(fmap, 2).ravel()
    )
    np.testing.assert_allclose(
        TF.cell_values(by_title["global avg pool\n(one mean per map)"]), ops.global_avg_pool(stack).round(2)
    )
    np.testing.assert_array_equal(TF.cell_values(by_title["flatten\n(A, then B)"]), ops.flatten(small))


@pytest.mark.parametrize("n,f,p,s", [(3, 3, 1, 1), (5, 3, 0, 1), (5, 3, 0, 2), (6, 2, 0, 2), (4, 3, 1, 2)])
def test_uses_per_pixel_counts_receptive_fields(n, f, p, s):
    # each output reads f*f cells of the padded input; the counts of the real pixels add up to
    # that total minus the reads that fall on padding
    import torch

    counts = ops.uses_per_pixel(n, f, p, s)
    x = torch.ones(1, 1, n, n, requires_grad=True)
    torch.nn.functional.conv2d(x, torch.ones(1, 1, f, f), padding=p, stride=s).sum().backward()
    np.testing.assert_array_equal(counts, x.grad[0, 0].numpy())  # d(sum of outputs)/d pixel = uses


def test_the_cells_the_kernel_has_not_reached_say_so():
    from src.figures.readability import problems

    cx, cw = RNG.integers(0, 10, (5, 5)).astype(float), RNG.integers(-1, 2, (3, 3)).astype(float)
    fig = TF.conv_step_figure(cx, cw, 1.0, (1, 1))  # the stage's position: 5 of the 9 outputs computed
    ax_y = fig.axes[2]
    np.testing.assert_array_equal(TF.cell_values(ax_y), ops.relu(ops.conv2d(cx, cw, 1.0)).ravel()[:5])
    assert "not computed yet" in ax_y.get_xlabel() and "5 of 9 positions" in ax_y.get_xlabel()
    pending = [p for p in ax_y.patches if p.get_hatch()]
    assert sorted((int(p.get_x() + 0.5), int(p.get_y() + 0.5)) for p in pending) == [(0, 2), (1, 2), (2, 1), (2, 2)]
    assert problems(fig) == []
    full = TF.conv_step_figure(cx, cw, 1.0, (2, 2))  # all computed: nothing hatched, nothing to explain
    assert full.axes[2].get_xlabel() == "" and not [p for p in full.axes[2].patches if p.get_hatch()]


def test_the_colour_original_hides_nothing_of_the_grey_input():
    from src.figures.readability import problems

    img = RNG.integers(0, 256, (32, 32, 3)).astype(np.uint8)
    k = {
        "vertical edge": np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], float),
        "horizontal edge": np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], float),
    }
    fig = TF.real_filters_figure(img, img.mean(axis=2) / 255, k)
    assert all(not ax.child_axes for ax in fig.axes)  # no inset over any panel
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert titles[0].startswith("the colour") and titles[1].startswith("input 32×32, grey")
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), img)
    assert problems(fig) == []
    assert len(TF.real_filters_figure(img, img.mean(axis=2) / 255, dict([k.popitem()])).axes) == 6 + 3  # one row


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_worked_examples_fit_their_canvas(seed, tmp_path, monkeypatch):
    """The convolution sum, the stride and padding captions and the deep-layer filters' title are
    laid out on the canvas, so each figure saves with its one draw: matplotlib's tight box (which
    grows the canvas to hold a text outside it) draws twice more."""
    from matplotlib.figure import Figure

    from src.figures import inside, lesson_steps
    from src.io import save_figure
    from src.models import build_model
    from tests.conftest import params_with

    def tight(*a, **k):
        raise AssertionError("a text lies outside the canvas: fell back to bbox_inches='tight'")

    monkeypatch.setattr(Figure, "savefig", tight)
    steps = lesson_steps.operations(np.random.default_rng(seed))
    for name, fig in steps:
        save_figure(fig, tmp_path / name, dpi=60)
    p = params_with({})
    fig, _ = inside.deep_layer_filters(build_model(p.model, 3), p.visualize.deep_filter_layer, 6, 6)
    save_figure(fig, tmp_path / "filters_deep_layer.png", dpi=60)
    assert len(list(tmp_path.glob("*.png"))) == 6
