"""oneDNN's kernel log read back (implementation, pass, shape, GFLOP/s) and the weight gradient as a
forward convolution (tiny, CPU)."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from benchmarks.kernels import (
    ConvShape,
    conv_flops,
    format_table,
    kernel_table,
    logged_kernels,
    parse_log,
    pass_totals,
    time_ways,
    trainable_convs,
    weight_grad_ways,
)
from tests.conftest import REPO

CONV = "mb256_ic24oc48_ih31oh31kh3sh1dh0ph1_iw31ow31kw3sw1dw0pw1"
LOG = f"""onednn_verbose,v1,info,oneDNN v3.12.0 (commit x)
onednn_verbose,v1,info,cpu,isa:Intel AVX2
onednn_verbose,v1,primitive,info,template:operation,engine,primitive,implementation,prop_kind,memory_descriptors,attributes,auxiliary,problem_desc,exec_time
onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,backward_weights,src:f32::blocked:acdb::f0,attr-scratchpad:user,alg:convolution_direct,{CONV},40.0
onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,backward_weights,src:f32::blocked:acdb::f0,attr-scratchpad:user,alg:convolution_direct,{CONV},60.0
onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx2,forward_training,src:f32::blocked:acdb::f0,,alg:convolution_direct,{CONV},20.0
onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:f32::blocked:abcd::f0,attr-scratchpad:user,,48x24x3x3,0.5
onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src,,,48x24x3x3,not-a-number
something else entirely
"""


def test_the_log_reads_back_as_calls_with_the_isa():
    isa, calls = parse_log(LOG)
    assert isa == "Intel AVX2"
    assert [(c.primitive, c.impl, c.pass_, c.ms) for c in calls] == [
        ("convolution", "jit:avx2", "backward weights", 40.0),
        ("convolution", "jit:avx2", "backward weights", 60.0),
        ("convolution", "brg_conv_fwd:avx2", "forward", 20.0),
        ("reorder", "jit:uni", "undef", 0.5),
    ]
    assert calls[0].shape == CONV


def test_a_convolutions_flops_come_from_its_problem_descriptor():
    assert conv_flops(CONV) == 2 * 256 * 48 * 31 * 31 * 24 * 9
    # a square problem may leave out its w-part; groups divide
    assert conv_flops("mb2_g2ic4oc8_ih5oh3kh3sh1dh0ph0") == 2 * 2 * 8 * 3 * 3 * 4 * 9 / 2
    assert conv_flops("48x24x3x3") is None


def test_the_table_sums_per_step_busiest_first_with_gflop_s_and_shares():
    _, calls = parse_log(LOG)
    rows = kernel_table(calls, steps=2)
    assert [(r["impl"], r["pass"]) for r in rows] == [
        ("jit:avx2", "backward weights"),
        ("brg_conv_fwd:avx2", "forward"),
        ("jit:uni", "undef"),
    ]
    bw = rows[0]
    assert bw["ms_per_step"] == 50.0 and bw["calls_per_step"] == 1.0
    # 5.10 GFLOP a call, 50 ms a call on average
    assert bw["gflop_s"] == pytest.approx(conv_flops(CONV) / 0.050 / 1e9)
    assert rows[2]["gflop_s"] is None
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    totals = pass_totals(rows)
    assert set(totals) == {"backward weights", "forward"}
    assert totals["forward"]["gflop_s"] == pytest.approx(conv_flops(CONV) / 0.020 / 1e9)
    text = format_table(rows, limit=2, step_ms=200.0)
    assert "oneDNN kernels: 60.2 ms of a 200.0 ms step (30%" in text
    assert "backward weights 50.0 ms at 102 GFLOP/s" in text
    assert text.count(CONV) == 2 and "48x24x3x3" not in text  # two rows asked for
    assert format_table([], limit=5, step_ms=200.0).startswith("oneDNN logged no kernels")


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN")
def test_the_log_of_a_real_convolution_is_caught_and_stdout_comes_back(capfd):
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    x = torch.randn(4, 3, 16, 16)
    isa, calls = logged_kernels(lambda: conv(x).sum().backward())
    convs = [c for c in calls if c.primitive == "convolution"]
    assert convs and all(c.ms >= 0 and c.impl for c in convs)
    assert isinstance(isa, str)  # oneDNN prints its ISA once a process: empty if a test before logged
    assert {c.pass_ for c in convs} >= {"forward"}
    print("after the log")
    sys.stdout.flush()
    out = capfd.readouterr().out
    assert "after the log" in out and "onednn_verbose" not in out


def test_the_weight_gradient_three_ways_is_one_gradient():
    torch.manual_seed(0)
    s = ConvShape((5, 6, 7, 7), (10, 6, 3, 3), (1, 1))  # 5 images: im2col's last chunk is short
    ways = weight_grad_ways(s)
    a, *others = (f() for f in ways.values())
    assert len(others) == 2 and a.shape == (10, 6, 3, 3)
    for b in others:
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    rows = time_ways([s], rounds=2)
    assert rows[0]["rel_err"] < 1e-4 and len(rows[0]["all_ms"]["as a forward convolution"]) == 2
    assert s.flops == 2 * 5 * 10 * 7 * 7 * 6 * 9 and s.out_hw == (7, 7)
    assert ConvShape((1, 3, 32, 32), (24, 3, 2, 2), (0, 0)).out_hw == (31, 31)


def test_the_trainable_convolutions_leave_out_the_frozen_whitening_layer():
    from src.models import build_model
    from tests.conftest import params_with

    p = params_with({"model": {"fast_cnn": {"widths": [8, 16, 16]}}})
    model = build_model(p.model, 3)
    shapes = trainable_convs(model, torch.randn(2, 3, 32, 32))
    assert len(shapes) == 6 and all(s.x[0] == 2 and s.w[2:] == (3, 3) for s in shapes)
    assert shapes[0].x[1] == model.whiten.out_channels and shapes[-1].w[:2] == (16, 16)


def test_the_command_times_every_trainable_convolution(tmp_path, monkeypatch, capsys):
    from benchmarks.kernels import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    small = ["--rounds", "1", "--name", "w", "--set", "model.fast_cnn.widths=[8,16,16]", "train.batch_size=4"]
    assert main(small) == 0
    out = json.loads((tmp_path / "benchmarks/results/w.json").read_text())
    assert len(out["convs"]) == 6 and out["command"].startswith("python -m benchmarks.kernels")
    assert "as a forward convolution" in capsys.readouterr().out and "im2col" in out["convs"][0]["ms"]
