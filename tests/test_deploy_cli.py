"""``yolomem deploy``: the issue's example prints every figure it asks for, and ``--json`` carries them under stable keys."""

from __future__ import annotations

import json

import pytest

from yolomem.cli.main import main
from yolomem.config.gpus import find_gpu
from yolomem.deployment.host import OS_HEADLESS_BYTES

EXAMPLE = ["deploy", "yolov8s.yaml", "format=engine", "precision=int8", "batch=2", "imgsz=128",
           "device=Jetson-AGX-Orin-32GB"]  # fmt: skip
JSON_KEYS = {"config", "task", "params", "device", "device_total_bytes", "unified_memory", "runtime_bytes",
             "runtime_low_bytes", "runtime_high_bytes", "weights_bytes", "activations_bytes", "context_bytes",
             "calibration_peak_bytes", "build_peak_bytes", "workspace_limit_bytes", "host_bytes", "ram_left_bytes",
             "os_reserve_bytes", "fits", "runtime", "build", "calibration", "host", "remaining_tensors", "assumptions", "notes"}  # fmt: skip


def _json_of(words: list[str]) -> dict:
    """What ``yolomem ... --json`` prints, parsed (outside pytest's capture: a module fixture uses it)."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*words, "--json"]) == 0
    return json.loads(out.getvalue())


@pytest.fixture(scope="module")
def example_json(capsys_module=None):
    return _json_of(EXAMPLE)


def test_json_has_the_stable_keys(example_json):
    assert JSON_KEYS <= set(example_json)
    term_keys = {t["key"] for t in example_json["runtime"]}
    assert {"weights", "activations", "io_buffers", "cuda_context", "trt_libraries", "pipeline"} <= term_keys
    assert {t["key"] for t in example_json["calibration"]} >= {"calibration_activations", "calibration_input"}
    for group in ("runtime", "build", "calibration", "host"):
        for term in example_json[group]:
            assert term["low"] <= term["bytes"] <= term["high"]


def test_json_figures_add_up(example_json):
    runtime = sum(t["bytes"] for t in example_json["runtime"])
    host = sum(t["bytes"] for t in example_json["host"])
    assert example_json["runtime_bytes"] == runtime
    assert example_json["execution_context_bytes"] == example_json["activations_bytes"]  # kSTATIC: the context's block
    cuda_context = next(t["bytes"] for t in example_json["runtime"] if t["key"] == "cuda_context")
    assert example_json["context_bytes"] == cuda_context  # the CUDA context, as estimate --json names it
    assert example_json["calibration_peak_bytes"] == sum(t["bytes"] for t in example_json["calibration"])
    total = find_gpu("Jetson-AGX-Orin-32GB").total_bytes
    assert example_json["device_total_bytes"] == total and example_json["unified_memory"] is True
    assert example_json["ram_left_bytes"] == total - runtime - host
    assert example_json["config"]["batch"] == 2 and example_json["config"]["precision"] == "int8"


def test_int8_weights_range_from_int8_to_fp16(example_json):
    weights = next(t for t in example_json["runtime"] if t["key"] == "weights")
    assert weights["high"] == pytest.approx(2 * weights["low"], rel=0.1)  # biases stay fp32 in both


def test_text_names_every_figure_the_issue_asks_for(capsys):
    import ultralytics

    assert main(EXAMPLE) == 0
    text = " ".join(capsys.readouterr().out.split())
    for phrase in ("weights", "activations = execution context", "INT8 calibration peak",
                   "builder workspace limit", "RAM left for the OS and the application",
                   f"ultralytics {ultralytics.__version__}"):  # fmt: skip  (the release whose code was traced)
        assert phrase in text, phrase


def test_bad_device_is_one_line_exit_2(capsys):
    assert main(["deploy", "yolov8n.yaml", "device=Jetson-Orin-Nan-8GB"]) == 2
    err = capsys.readouterr().err
    assert "did you mean" in err and err.count("\n") == 1


def test_table_deployment_view(capsys):
    assert main(["table", "yolov8n.yaml", "yolov5s", "deploy=engine", "precision=fp16", "imgsz=64",
                 "device=Jetson-Orin-Nano-8GB", "--json"]) == 0  # fmt: skip
    table = json.loads(capsys.readouterr().out)
    assert table["config"] == {"format": "engine", "precision": "fp16", "batch": 1, "imgsz": 64,
                               "device": "Jetson-Orin-Nano-8GB", "os_reserve_bytes": OS_HEADLESS_BYTES}  # fmt: skip
    (row,) = table["rows"]
    assert row["model"] == "yolov8n" and row["fits"] is True
    assert row["activations_low_bytes"] <= row["activations_bytes"] < row["runtime_bytes"]
    assert row["ram_left_bytes"] == find_gpu("Jetson-Orin-Nano-8GB").total_bytes - row["runtime_bytes"] - row["host_bytes"]
    assert len(table["skipped"]) == 1 and table["skipped"][0].startswith("yolov5s")  # another training loop


def test_table_deployment_view_as_markdown_and_csv(capsys):
    """--markdown and --csv printed the rich view to stderr and nothing on stdout."""
    words = ["table", "yolov8n.yaml", "deploy=onnx", "imgsz=64"]
    assert main([*words, "--markdown"]) == 0
    markdown = capsys.readouterr().out
    assert markdown.startswith("| model | params | weights |") and "| yolov8n | 3.2M |" in markdown
    assert main([*words, "--csv"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split(",")[:3] == ["model", "params", "weights_bytes"] and row.startswith("yolov8n,")


def test_deployment_keys_without_deploy_are_refused(capsys):
    assert main(["table", "yolov8n.yaml", "precision=fp16", "device=T4"]) == 2
    assert "add deploy=" in capsys.readouterr().err


def test_report_deployment_section():
    from types import SimpleNamespace

    from yolomem.deployment.estimate import deploy
    from yolomem.render.report_html import _deployment

    result = deploy("yolov8n.yaml", format="engine", precision="fp16", imgsz=64, device="Jetson-Orin-Nano-8GB")
    page = _deployment(SimpleNamespace(deployment=result))
    assert page.startswith("<h2>Deployment</h2>") and 'id="deployment"' in page
    for term in (*result.runtime, *result.build, *result.host):
        assert f'data-key="deploy.{term.key}" data-bytes="{term.bytes}"' in page
    assert f'data-key="deploy.ram_left_bytes" data-bytes="{result.ram_left_bytes}"' in page
    assert f'data-key="deploy.os_reserve_bytes" data-bytes="{result.os_reserve_bytes}"' in page
    assert _deployment(SimpleNamespace(deployment=None)) == ""  # no section unless asked (report deploy=...)


def test_python_api_is_the_function():
    import yolomem
    import yolomem.deployment.estimate  # noqa: F401 - the subpackage must not shadow the function

    assert callable(yolomem.deploy) and yolomem.deploy.__name__ == "deploy"
    with pytest.raises(yolomem.UserError):
        yolomem.deploy("yolov8n.yaml", format="torch", precision="int8")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_onnx_on_a_small_graph_keeps_its_range(precision):
    """At imgsz 64 the cuDNN workspace's own arena region left less growth than the arena without it, and
    the growth term's low end came out above its figure (a ValueError traceback, found by the site build)."""
    from yolomem.deployment.estimate import deploy

    deployed = deploy("yolov8n.yaml", format="onnx", precision=precision, batch=2, imgsz=64)
    growth = deployed.term("arena_growth")
    assert growth.low <= growth.bytes <= growth.high and deployed.runtime_bytes > 0


def test_a_huge_batch_is_one_line_exit_2(capsys):
    """batch=1e8 made 1e8 real host images (killed at 22 GB); the bound refuses it before anything is made."""
    assert main(["deploy", "yolov8n.yaml", "batch=100000000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "batch=100000000 must be a positive whole number up to 1000000" in err, err


@pytest.mark.parametrize(("words", "gib"), [(["imgsz=1000000"], "8381.9"), (["imgsz=8192", "batch=64"], "36.0")])
def test_a_request_the_host_cannot_hold_is_one_line_exit_2(capsys, words, gib):
    """imgsz=1000000: the predictor's host-side frame alone is 2.7 TiB (numpy's MemoryError was a traceback);
    batch 64 at 8192 fit each allocation and was killed at 23.6 GB of RSS. Both are refused before tracing."""
    assert main(["deploy", "yolov8n-seg.yaml", *words]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"images take {gib} GiB of host memory" in err, err


def test_a_yolov5_repo_model_is_refused_with_ultralytics_own_build_named(capsys):
    """deploy runs Ultralytics' predictor and validator, which cannot load the repo's models; where Ultralytics
    ships its own build of the name (yolov5s -> yolov5su.yaml, another head), the one line names it."""
    assert main(["deploy", "yolov5s"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trained by the yolov5 loop" in err and "yolov5su.yaml" in err, err
    assert main(["deploy", "yolov4-tiny"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "yolov4-tinyu" not in err, err


@pytest.mark.parametrize(("model", "deploy_format", "postprocess"), [
    ("yolov8n.yaml", "onnx", "(NMS)"), ("yolo11n-cls.yaml", "onnx", "(softmax)"), ("yolo11n-cls.yaml", "pt", "softmax"),
    ("rtdetr-l.yaml", "pt", "no NMS"), ("rtdetr-l.yaml", "onnx", "(no NMS)"),
])  # fmt: skip
def test_labels_name_the_tasks_own_postprocess(model, deploy_format, postprocess):
    """A detect model's pipeline has no masks to name; a classifier and RT-DETR run no NMS (the trace
    counts the postprocess's NMS calls) and assume no NMS candidates."""
    report = _json_of(["deploy", model, f"format={deploy_format}", "imgsz=64"])
    labels = " ".join(t["label"] + " " + t["note"] for t in report["runtime"])
    assert postprocess in labels and "masks" not in labels
    if "NMS" not in postprocess:
        assert "NMS" not in labels + " ".join(report["assumptions"])
    elif "no NMS" in postprocess:
        assert "candidates" not in labels + " ".join(report["assumptions"])


def test_weights_are_the_models_in_val_at_any_batch():
    """The weights term counted the first val batch, collated before the first iteration: 13 MiB at batch 1,
    87 MiB at 64 for 3.2 M parameters. It is the fused model's parameters and buffers on the device."""
    import yolomem

    def weights(**settings) -> int:
        result = yolomem.deploy("yolov8n.yaml", imgsz=128, **settings)
        return next(t.bytes for t in result.runtime if t.key == "weights")

    predict = weights()
    assert weights(mode="val", batch=1) == weights(mode="val", batch=16) == predict
    assert weights(mode="val", batch=16, precision="fp16") == weights(precision="fp16") < predict


@pytest.mark.parametrize(("words", "said"), [
    (["device=Orin"], "did you mean 'Jetson-AGX-Orin-32GB'"),  # the names that contain it
    (["device=0"], "is a CUDA device index (Ultralytics' device=); name the card"),  # not "did you mean 'A10'"
    (["device=cuda:0"], "is a CUDA device index"),
    (["arena_extend_strategy=kSame"], "did you mean 'kSameAsRequested'"),
])  # fmt: skip
def test_an_unknown_device_or_choice_suggests_what_a_user_meant(capsys, words, said):
    assert main(["deploy", "yolov8n.yaml", *words]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and said in err, err


def test_the_table_takes_deploys_spellings_of_a_format(capsys):
    assert main(["table", "yolov8n.yaml", "deploy=tensorrt", "imgsz=64", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["format"] == "engine"


def test_a_jetson_verdict_keeps_the_os_share_of_its_memory():
    """Unified memory: the deployment fits when the RAM it leaves holds the OS's share (``os_reserve=``,
    by default a headless system's most); a Jetson given its memory (``gpu_mem=``) stays unified."""
    from yolomem.deployment.estimate import deploy

    GiB = 1 << 30
    sized = deploy("yolov8n.yaml", imgsz=64, device="Jetson-Orin-Nano-8GB")
    needed = sized.runtime_bytes + sized.host_bytes
    tight = (needed + OS_HEADLESS_BYTES // 2) / GiB  # the RAM left: half the default reserve
    default = deploy("yolov8n.yaml", imgsz=64, device="Jetson-Orin-Nano-8GB", gpu_mem=tight)
    assert default.unified_memory and default.runtime_bytes == sized.runtime_bytes
    assert 0 < default.ram_left_bytes < default.os_reserve_bytes == OS_HEADLESS_BYTES and default.fits is False
    headless = deploy("yolov8n.yaml", imgsz=64, device="Jetson-Orin-Nano-8GB", gpu_mem=tight, os_reserve=0.1)
    assert headless.os_reserve_bytes == int(0.1 * GiB) and headless.fits is True
    assert deploy("yolov8n.yaml", imgsz=64, device="Jetson-Orin-Nano-8GB", os_reserve=1.5).os_reserve_bytes == int(1.5 * GiB)
    discrete = deploy("yolov8n.yaml", imgsz=64, gpu_mem=tight)  # a card of that size: no OS beside it
    assert not discrete.unified_memory and discrete.fits is True and discrete.to_json()["os_reserve_bytes"] is None


def test_the_text_and_the_table_say_what_the_os_keeps(capsys):
    assert main(["deploy", "yolov8n.yaml", "imgsz=64", "device=Jetson-Orin-Nano-8GB", "os_reserve=1.5"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "kept for the OS (os_reserve=) │ 1.50 GiB" in text and "keeps os_reserve=1.5 GiB" in text
    assert main(["table", "yolov8n.yaml", "deploy=torch", "imgsz=64", "device=Jetson-Orin-Nano-8GB", "--markdown"]) == 0
    assert "- fits: the RAM left holds the 500 MiB kept for the OS (os_reserve=)" in capsys.readouterr().out
    assert main(["table", "yolov8n.yaml", "os_reserve=1"]) == 2  # a key of the deployment view only
    assert "add deploy=" in capsys.readouterr().err


def test_the_blog_tables_darknet_yolov3_rows_are_skipped_as_another_loops(monkeypatch, capsys):
    """The blog's YOLOv3 rows are the darknet designs the training table traces with the yolov5 loop; the
    deployment view of the blog's rows skips them as it skips YOLOv4/v5, naming Ultralytics' own build."""
    from yolomem.deployment import table as deploy_table_module
    from yolomem.sweeps.table import BLOG_ROWS, ORIGINAL_IN_BLOG

    sized = []
    monkeypatch.setattr(deploy_table_module, "deploy_config", lambda config: sized.append(config.model) or 1 / 0)
    monkeypatch.setattr("yolomem.sweeps.table.BLOG_ROWS", tuple(row for row in BLOG_ROWS if row[1] in ORIGINAL_IN_BLOG))
    assert main(["table", "deploy=onnx", "imgsz=64", "--json"]) == 0
    skipped = json.loads(capsys.readouterr().out)["skipped"]
    assert sized == [] and [line.split(":")[0] for line in skipped] == ["yolov3-tiny", "yolov3"]
    assert "yolov3-tinyu.yaml (its anchor-free head, not the repo's model) deploys" in skipped[0]
