"""Darknet cfg parsing and building, on small hand-written cfgs; errors name the section and line."""

from __future__ import annotations

import pytest
import torch

from yolomem.loops.yolov5.darknet import build_darknet, parse_cfg
from yolomem.errors import UserError

TINY = """
[net]
batch=64
subdivisions=16
width=64
height=64
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=mish

[route]
layers=-1
groups=2
group_id=1

[convolutional]
batch_normalize=1
filters=16
size=1
stride=1
pad=1
activation=swish

[shortcut]
from=-3
activation=linear

[maxpool]
size=2
stride=2

[convolutional]
size=1
stride=1
pad=1
filters=21
activation=linear

[yolo]
mask=0,1,2
anchors=10,13, 16,30, 33,23
classes=2
num=3
"""


def test_parse_and_build_tiny_cfg():
    cfg = parse_cfg(TINY, "tiny.cfg")
    assert (cfg.width, cfg.height, cfg.batch, cfg.subdivisions, cfg.mini_batch) == (64, 64, 64, 16, 4)
    assert [s.kind for s in cfg.layers] == ["convolutional", "convolutional", "route", "convolutional",
                                            "shortcut", "maxpool", "convolutional", "yolo"]  # fmt: skip
    model = build_darknet(cfg)
    # conv 3->8 (3x3, BN: no bias) + BN; conv 8->16 + BN; route halves to 8; conv 8->16 (1x1) + BN; pred 16->21 + bias
    expected = (8 * 3 * 9 + 16) + (16 * 8 * 9 + 32) + (16 * 8 + 32) + (21 * 16 + 21)
    assert sum(p.numel() for p in model.parameters()) == expected
    out = model(torch.zeros(2, 3, 64, 64))
    assert [tuple(o.shape) for o in out] == [(2, 3, 8, 8, 7)]  # stride 8: two stride-2 convs, one maxpool
    assert model.head.strides == (8,) and model.head.nc == 2


def test_nc_override_resizes_the_prediction_conv():
    model = build_darknet(parse_cfg(TINY), nc=80)
    assert model.head.nc == 80
    assert model(torch.zeros(1, 3, 64, 64))[0].shape[-1] == 85


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (TINY.replace("[maxpool]", "[avgpool]"), "[avgpool] at <cfg> line"),
        (TINY.replace("activation=mish", "activation=gelu"), "activation in [convolutional] at line"),
        (TINY.replace("groups=2\n", "groups=2\nwobble=1\n"), "key in [route] at <cfg> line"),
        (TINY.replace("from=-3", "from=-9"), "[shortcut] at line"),
        (TINY.replace("filters=21", "filters=20"), "[yolo] at line"),
        ("[convolutional]\nfilters=8\n", "starts with a [net] section"),
        (TINY.replace("filters=8", "filters=eight"), "is not a whole number"),
        (TINY.replace("[route]", "[route"), "has no closing ']'"),
    ],
)
def test_errors_name_the_section_and_line(text, message):
    with pytest.raises(UserError) as error:
        build_darknet(parse_cfg(text))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_key_reports_its_line():
    text = TINY.replace("groups=2\n", "groups=2\nwobble=1\n")
    line = text.splitlines().index("wobble=1") + 1
    with pytest.raises(UserError, match=f"line {line}"):
        parse_cfg(text)


def test_shipped_cfgs_build_and_route():
    from yolomem.loops.yolov5.names import find_original
    from yolomem.loops.yolov5.runner import build_original

    model = build_original(find_original("yolov4-tiny"))
    assert model.head.strides == (32, 16)
    out = model(torch.zeros(1, 3, 64, 64))
    assert [tuple(o.shape) for o in out] == [(1, 3, 2, 2, 85), (1, 3, 4, 4, 85)]


def test_user_cfg_file_selects_the_yolov5_loop(tmp_path):
    from yolomem.loops import resolve_model

    path = tmp_path / "mine.cfg"
    path.write_text(TINY)
    resolved = resolve_model(str(path))
    assert (resolved.framework, resolved.source, resolved.name) == ("yolov5", "darknet", "mine")
    with pytest.raises(UserError, match="does not exist"):
        resolve_model(str(tmp_path / "missing.cfg"))
