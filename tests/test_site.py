"""Issue 16: the calculator page (``yolomem site``). A small site is built as a user would build it, then
opened in headless Chromium with settings chosen in its address: the figures the page shows must be the
ones ``yolomem estimate`` prints for the same settings, at traced and at derived batches, and the page
must load nothing from anywhere."""

from __future__ import annotations

import json
import logging
import re

import pytest

from yolomem.cli.main import main
from yolomem.render.site_html import page_data
from yolomem.result import runs
from yolomem.trace.store import TraceStore

from chromium import blocked_loads, needs_chromium, run_chromium

GiB = 1 << 30
BATCHES = (1, 2, 3, 4, 5, 6)  # 1-4 traced, 5 and 6 derived from them (yolomem.result.runs)
DEPLOY_BATCHES = (1, 3)
WORDS = ["models=yolov8n.yaml", "imgsz=64", f"batches={','.join(map(str, BATCHES))}", "amp=true,false",
         "iterations=1", "deploy=torch,engine", f"deploy_batches={','.join(map(str, DEPLOY_BATCHES))}", "jobs=1"]  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Built on an empty trace cache, so its points are traced or derived here (the log says which); the
    CLI figures it is compared with come from the tests' shared cache."""
    folder = tmp_path_factory.mktemp("site")
    heard: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: heard.append(record.getMessage())
    logger = logging.getLogger("yolomem.runs")
    previous_level, previous_source = logger.level, runs._SOURCE
    logger.addHandler(handler), logger.setLevel(logging.INFO)
    runs._SOURCE = runs.RunSource(TraceStore(tmp_path_factory.mktemp("empty-cache")))
    try:
        assert main(["site", *WORDS, "-o", str(folder)]) == 0
    finally:
        logger.removeHandler(handler), logger.setLevel(previous_level)
        runs._SOURCE = previous_source
    page = folder / "index.html"
    return folder, page, page.read_text(encoding="utf-8"), heard


def test_points_past_the_traced_batches_are_derived(site):
    heard = site[3]
    derived = {int(m.group(1)) for m in (re.search(r"batch=(\d+) imgsz=64: derived", line) for line in heard) if m}
    assert {5, 6} <= derived


def _cli(capsys, *words: str) -> dict:
    capsys.readouterr()
    assert main(["estimate", "yolov8n.yaml", "imgsz=64", "iterations=1", *words, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_every_point_is_the_estimate_the_cli_prints(site, capsys):
    page = site[2]
    data = page_data(page)
    assert data["batches"] == list(BATCHES)
    assert {(s["model"], s["amp"]) for s in data["series"]} == {("yolov8n.yaml", "fp16"), ("yolov8n.yaml", "fp32")}
    assert data["versions"]["ultralytics"] and data["versions"]["torch"]
    for series in data["series"]:
        points = series["points"]
        for index, batch in enumerate(BATCHES):
            cli = _cli(capsys, f"batch={batch}", f"amp={series['amp']}")
            for key in ("gpu_mem_printed", "gpu_mem_upper_printed", "peak_reserved_bytes", "device_total_bytes",
                        "peak_reserved_upper_bytes", "device_total_upper_bytes"):  # fmt: skip
                assert points[key][index] == cli[key], (series["amp"], batch, key)
            assert {part: values[index] for part, values in points["breakdown"].items()} == cli["breakdown"]
        assert series["gpu_mem_unit"] == cli["gpu_mem_unit"] and series["optimizer_used"] == cli["config"]["optimizer"]


def _deploy_cli(capsys, *words: str) -> dict:
    capsys.readouterr()
    assert main(["deploy", "yolov8n.yaml", "imgsz=64", *words, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_every_deployment_point_is_what_deploy_prints(site, capsys):
    data = page_data(site[2])
    assert data["deploy_batches"] == list(DEPLOY_BATCHES)
    assert {(s["format"], s["precision"]) for s in data["deploy_series"]} == {
        ("torch", "fp32"), ("torch", "fp16"), ("engine", "fp32"), ("engine", "fp16"), ("engine", "int8")}
    for series in data["deploy_series"]:
        points = series["points"]
        for index, batch in enumerate(DEPLOY_BATCHES):
            cli = _deploy_cli(capsys, f"format={series['format']}", f"precision={series['precision']}", f"batch={batch}",
                              "device=T4")  # fmt: skip
            for key in ("runtime_bytes", "runtime_low_bytes", "build_peak_bytes", "calibration_peak_bytes", "host_bytes"):
                assert points[key][index] == cli[key], (series["format"], series["precision"], batch, key)
            assert {key: values[index] for key, values in points["terms"].items()} == {t["key"]: t["bytes"] for t in cli["runtime"]}


def test_the_page_is_one_file_that_loads_nothing(site):
    folder, page = site[0], site[2]
    assert [p.name for p in folder.iterdir()] == ["index.html"]
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    assert "default-src &#x27;none&#x27;" in policy and "unsafe-inline" not in policy
    assert not re.search(r"\s(src|href)=", page)  # no script, style, image or font from anywhere
    assert len(page.encode()) < 5 * 2**20


def _open(folder, page, address: str, *extra: str):
    return run_chromium(folder, "--virtual-time-budget=3000", *extra, page.as_uri() + address)


def _shown(dom: str, key: str) -> str:
    match = re.search(rf'<(td|span|pre)[^>]*data-key="{key}"[^>]*>(.*?)</\1>', dom)
    assert match, f"the page shows no {key}"
    return re.sub(r"<[^>]+>", "", match.group(2))


@needs_chromium
@pytest.mark.parametrize("batch", [2, 5])  # traced, derived
def test_chromium_shows_what_the_cli_prints(site, capsys, batch):
    folder, page = site[0], site[1]
    run = _open(folder, page, f"#model=yolov8n.yaml&imgsz=64&batch={batch}&amp=fp16&gpu=T4", "--dump-dom")
    dom = run.stdout
    cli = _cli(capsys, f"batch={batch}", "gpu=T4")
    assert _shown(dom, "gpu_mem_printed") == cli["gpu_mem_printed"]
    assert _shown(dom, "gpu_mem_upper_printed") == cli["gpu_mem_upper_printed"]
    assert _shown(dom, "device_total_bytes") == f"{cli['device_total_bytes'] / GiB:.3f} GiB"
    assert _shown(dom, "device_total_upper_bytes") == f"{cli['device_total_upper_bytes'] / GiB:.3f} GiB"
    verdict = re.search(r'data-key="verdict" data-fits="(true|false)"', dom).group(1)
    assert verdict == str(cli["fits"]).lower() == "true"
    assert f"{cli['capacity_bytes'] / GiB:.2f} GiB after the CUDA context" in _shown(dom, "verdict")
    assert _shown(dom, "train_command") == f"yolo train model=yolov8n.yaml data=YOUR_DATA.yaml imgsz=64 batch={batch}"
    assert _shown(dom, "cli") == f"yolomem estimate yolov8n.yaml imgsz=64 batch={batch} iterations=1 gpu=T4"
    blocked = blocked_loads(run.stderr)
    assert not blocked, f"the page tried to load something: {blocked}"


@needs_chromium
def test_chromium_custom_card_verdict_and_largest_batch(site, capsys):
    """A card too small for the run: the page's verdict and largest batch are the CLI's."""
    folder, page = site[0], site[1]
    run = _open(folder, page, "#model=yolov8n.yaml&imgsz=64&batch=4&amp=fp32&gpu=custom&gpu_mem=0.75", "--dump-dom")
    cli = _cli(capsys, "batch=4", "amp=false", "gpu_mem=0.75")  # 6 MiB after the upper context
    assert cli["fits"] is False
    assert re.search(r'data-key="verdict" data-fits="false"', run.stdout)
    assert f"{cli['capacity_bytes'] / GiB:.2f} GiB after the CUDA context" in _shown(run.stdout, "verdict")
    # every catalog card: the page's largest batch is the largest of its batches that `estimate gpu=` says fits
    data = page_data(page.read_text())
    upper = next(s for s in data["series"] if s["amp"] == "fp32")["points"]["peak_reserved_upper_bytes"]
    for name in ("T4", "RTX-3060-12GB"):
        shown = re.search(rf'data-card="{name}" data-max-batch="(\d*)"', run.stdout).group(1)
        assert shown == str(BATCHES[-1])  # yolov8n at imgsz 64 fits every card at every batch here
        assert _cli(capsys, f"batch={BATCHES[-1]}", "amp=false", f"gpu={name}")["fits"] is True
    assert max(upper) < 1 * GiB


@needs_chromium
def test_chromium_on_a_card_without_amp_shows_the_fp32_run(site, capsys):
    """Ultralytics' check_amp turns AMP off on a GTX 1650 (8.3.47+): asked for AMP there, the page shows what
    `estimate gpu=GTX-1650` prints (the FP32 run) and says why; the largest-batch table judges that card
    by the FP32 series and the others by AMP's."""
    from yolomem.loops.ultralytics.release import release

    if release().amp_refused_cards is None:
        pytest.skip(f"ultralytics {release().version}'s check_amp has no list of cards")
    folder, page = site[0], site[1]
    run = _open(folder, page, "#model=yolov8n.yaml&imgsz=64&batch=4&amp=fp16&gpu=GTX-1650", "--dump-dom")
    cli = _cli(capsys, "batch=4", "gpu=GTX-1650")
    assert cli["config"]["amp"] == "fp32"
    assert _shown(run.stdout, "gpu_mem_upper_printed") == cli["gpu_mem_upper_printed"]
    assert _shown(run.stdout, "device_total_upper_bytes") == f"{cli['device_total_upper_bytes'] / GiB:.3f} GiB"
    assert "check_amp turns AMP off on GTX-1650" in _shown(run.stdout, "amp_off")
    assert "amp=" not in _shown(run.stdout, "cli") and "amp=False" not in _shown(run.stdout, "train_command")
    data = page_data(page.read_text())
    series = {s["amp"]: s["points"]["peak_reserved_upper_bytes"] for s in data["series"]}
    assert cli["peak_reserved_upper_bytes"] == series["fp32"][BATCHES.index(4)] != series["fp16"][BATCHES.index(4)]
    assert any(card[0] == "GTX-1650" and card[2] for card in data["cards"])
    for name, amp in (("GTX-1650", "fp32"), ("T4", "fp16")):
        shown = re.search(rf'data-card="{name}" data-max-batch="(\d*)"', run.stdout).group(1)
        fitting = [b for b, upper in zip(BATCHES, series[amp]) if upper <= _cli(capsys, "batch=1", f"gpu={name}")["capacity_bytes"]]
        assert shown == str(max(fitting)), name


@needs_chromium
def test_chromium_gives_no_amp_figure_for_a_card_that_trains_fp32_when_the_page_lacks_fp32(site, tmp_path):
    """Built with AMP figures only, the page cannot judge a card check_amp turns AMP off on: its largest batch
    names why, not the AMP run's (which would be too high a batch)."""
    import json

    from yolomem.loops.ultralytics.release import release
    from yolomem.render.site_html import page_data

    if release().amp_refused_cards is None:
        pytest.skip(f"ultralytics {release().version}'s check_amp has no list of cards")
    text = site[2]
    data = page_data(text)
    data["series"] = [s for s in data["series"] if s.get("amp") != "fp32"]
    start = text.index('<script type="application/json" id="site-data">') + len('<script type="application/json" id="site-data">')
    page = tmp_path / "index.html"
    page.write_text(text[:start] + json.dumps(data).replace("</", "<\\/") + text[text.index("</script>", start):], encoding="utf-8")
    run = _open(tmp_path, page, "#model=yolov8n.yaml&imgsz=64&batch=4&amp=fp16&gpu=T4", "--dump-dom")
    assert re.search(r'data-card="GTX-1650" data-max-batch=""[^>]*>trains in FP32 here', run.stdout)
    assert re.search(r'data-card="T4" data-max-batch="\d+"', run.stdout)


@needs_chromium
def test_chromium_deployment_view_shows_what_deploy_prints(site, capsys):
    folder, page = site[0], site[1]
    run = run_chromium(folder, "--virtual-time-budget=3000", "--dump-dom", page.as_uri() +
                       "#mode=deploy&model=yolov8n.yaml&imgsz=64&format=engine&precision=int8&batch=3&gpu=T4")  # fmt: skip
    cli = _deploy_cli(capsys, "format=engine", "precision=int8", "batch=3", "device=T4")
    for key in ("runtime_bytes", "build_peak_bytes", "calibration_peak_bytes", "host_bytes"):
        assert re.search(rf'data-key="{key}" data-bytes="{cli[key]}">{cli[key] / GiB:.3f} GiB<', run.stdout), key
    assert re.search(rf'data-key="verdict" data-fits="{str(cli["fits"]).lower()}"', run.stdout)
    assert _shown(run.stdout, "cli") == "yolomem deploy yolov8n.yaml format=engine precision=int8 batch=3 imgsz=64 device=T4"
    assert not blocked_loads(run.stderr)


@needs_chromium
def test_chromium_screenshot(site):
    folder, page = site[0], site[1]
    shot = folder / "site.png"
    _open(folder, page, "#model=yolov8n.yaml&batch=4&gpu=T4", f"--screenshot={shot}", "--window-size=1200,1400",
          "--hide-scrollbars")  # fmt: skip
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


@pytest.mark.parametrize(("word", "says"), [
    ("amp=fp17", "fp16"), ("batches=0", "batches"), ("tasks=detekt", "detect"), ("cards=T5", "T4"),
    ("optimizer=adamw2", "AdamW"), ("models=yolov8m.yaml,yolov8q.yaml", "yolov8"),
])  # fmt: skip
def test_bad_input_is_one_line(capsys, word, says, tmp_path):
    words = [word] if word.startswith("models=") else ["models=yolov8n.yaml", word]
    assert main(["site", *words, "-o", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("yolomem: error:") and says in err
    assert not (tmp_path / "s").exists()
