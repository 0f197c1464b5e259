"""The calculator page's size and first render (issue 16's targets: under 5 MB, under 1 s).

1. Builds a small real page (``yolomem site``: one model, the default batches, its deployment view) and
   prints the bytes one training series and one deployment series add to the page.
2. Projects the full page (every default model x three precisions at one imgsz, and each deployment
   format x precision of the models ``yolomem deploy`` sizes) from those figures.
3. Times the first render of a page of that full size in headless Chromium: the real series repeated
   under other model names (only to give the page its full size; the figures are not read), opened
   from ``file://``; the page records milliseconds from navigation to its first figures.

    python benchmarks/bench_site.py [--model yolov8n.yaml] [--imgsz 640]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolov8n.yaml")
    parser.add_argument("--imgsz", type=int, default=640)
    args = parser.parse_args()

    from yolomem.cli.site import default_models
    from yolomem.render.site_html import render_site
    from yolomem.sweeps.site_data import DEFAULT_AMPS, TASKS, SiteRequest, compute_site

    started = time.perf_counter()
    data = compute_site(SiteRequest(models=(args.model,), imgsz=(args.imgsz,), amps=("fp16",)))
    empty = render_site(dataclasses.replace(data, series=(), deploy_series=()))
    per_series = len(render_site(dataclasses.replace(data, deploy_series=())).encode()) - len(empty.encode())
    per_deploy = (len(render_site(dataclasses.replace(data, series=())).encode()) - len(empty.encode())) / len(data.deploy_series)
    models = default_models(TASKS)
    request = SiteRequest(models=models)
    count, deploy_count = len(models) * len(DEFAULT_AMPS), len(request.deploy_configs())
    print(f"one training series ({args.model}, imgsz {args.imgsz}, {len(data.batches)} batches): {per_series / 1024:.1f} KiB; "
          f"one deployment series ({len(data.deploy_batches)} batches): {per_deploy / 1024:.1f} KiB "
          f"(computed in {time.perf_counter() - started:.0f} s)")  # fmt: skip
    print(f"page without series: {len(empty.encode()) / 1024:.1f} KiB")
    full = dataclasses.replace(
        data, series=tuple(dataclasses.replace(data.series[0], model=f"m{i}.yaml") for i in range(count)),
        deploy_series=tuple(dataclasses.replace(data.deploy_series[i % len(data.deploy_series)],
                                                model=f"m{i // len(data.deploy_series)}.yaml")
                            for i in range(deploy_count)))  # fmt: skip
    page = render_site(full)
    print(f"full page, {count} training and {deploy_count} deployment series: {len(page.encode()) / 2**20:.2f} MiB "
          "(target: under 5 MB)")  # fmt: skip

    chromium = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if chromium is None:
        print("first render: no chromium on PATH")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index.html"
        path.write_text(page, encoding="utf-8")
        times = []
        for _ in range(3):
            run = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp}/p",
                                  "--virtual-time-budget=5000", "--dump-dom", path.as_uri()],
                                 capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
            times.append(int(re.search(r'data-first-render-ms="(\d+)"', run.stdout).group(1)))
    print(f"first render of the full page in headless Chromium: {min(times)} ms best, {max(times)} ms worst of 3 "
          "(target: under 1 s)")  # fmt: skip
    print(json.dumps({"series_bytes": per_series, "deploy_series_bytes": round(per_deploy), "series": count,
                      "deploy_series": deploy_count, "full_page_bytes": len(page.encode()), "first_render_ms": times}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
