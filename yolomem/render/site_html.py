"""The calculator page of ``yolomem site``: one self-contained HTML file (``index.html``).

The data (``yolomem.sweeps.site_data``) sits in the page as a JSON block; the script and the style sit
in it too, allowed by their hashes in a strict Content-Security-Policy (``default-src 'none'``), so the
page loads nothing from anywhere: it works from ``file://`` and any static host. The script
(``site.js``) only looks figures up and draws them; the one computation it repeats is the verdict of
``yolomem.result.fits`` (upper figure against the card minus the upper CUDA context and the margin).

Settings can be set from the address: ``index.html#model=yolov8m.yaml&batch=24&gpu=RTX-3060-12GB``
(also ``imgsz``, ``amp``, ``optimizer``, ``instances``, ``gpu=custom&gpu_mem=10``; the deployment view:
``mode=deploy&format=engine&precision=int8``); the page keeps the address in step with the controls,
so a link shares a result.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from importlib import resources

from yolomem.render.plots import PART_LABELS
from yolomem.sweeps.site_data import SiteData

TITLE = "YOLO GPU memory calculator"


def _asset(name: str) -> str:
    return resources.files("yolomem.render").joinpath("site_assets", name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def render_site(data: SiteData) -> str:
    script, style = _asset("site.js"), _asset("site.css")
    payload = data.to_json() | {"part_labels": PART_LABELS}
    block = json.dumps(payload, separators=(",", ":")).replace("</", "<\\/")  # cannot close the script
    policy = f"default-src 'none'; script-src {_sha256(script)}; style-src {_sha256(style)}; img-src data:"
    versions = ", ".join(f"{name} {version}" for name, version in data.versions.items())
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{html.escape(policy)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{TITLE}</title>
<style>{style}</style>
</head>
<body>
<header>
<h1>{TITLE}</h1>
<p class="lead">GPU memory of a YOLO training run, before you train: every figure is a full
<code>yolomem estimate</code> (the real training step traced on fake tensors, replayed through a model of
PyTorch's CUDA caching allocator), computed by {html.escape(versions)}. The deployment view is
<code>yolomem deploy</code>: PyTorch, ONNX Runtime and TensorRT.</p>
</header>
<main>
<form id="controls" autocomplete="off">
<label>view <select id="mode"></select></label>
<label>task <select id="task"></select></label>
<label>model <select id="model"></select></label>
<label>imgsz <select id="imgsz"></select></label>
<label>batch <select id="batch"></select></label>
<label class="train-only">precision <select id="amp"></select></label>
<label class="train-only">optimizer <select id="optimizer"></select></label>
<label class="train-only">objects / image <select id="instances"></select></label>
<label class="deploy-only" hidden>format <select id="format"></select></label>
<label class="deploy-only" hidden>precision <select id="precision"></select></label>
<label>GPU <select id="gpu"></select></label>
<label id="custom-label" hidden>GiB <input id="gpu_mem" type="number" min="0.7" step="0.5" value="8"></label>
</form>
<section id="result" aria-live="polite"></section>
</main>
<footer>
<p>Figures exist at the batches listed; the page does not interpolate between them. Verdicts use the upper
figure (9 runs in 10 stay under) against the card's memory minus the CUDA context and a
<span id="margin"></span> margin, as <code>yolomem estimate gpu=</code> and <code>yolomem fit</code> do.
Computed by {html.escape(versions)} in {data.seconds:.0f} s.</p>
</footer>
<script type="application/json" id="site-data">{block}</script>
<script>{script}</script>
</body>
</html>
"""


def page_data(page: str) -> dict:
    """The data block of a written page (tests, and anyone reading a built site)."""
    start = page.index('<script type="application/json" id="site-data">') + len('<script type="application/json" id="site-data">')
    return json.loads(page[start : page.index("</script>", start)].replace("<\\/", "</"))
