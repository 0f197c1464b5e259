"""Every model name yolomem builds, from each training loop, with family, parameters and task."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    framework: str
    params: int  # of the model a trace builds: a YAML's summary line where it counts that model, else counted
    task: str


def list_models() -> tuple[ModelEntry, ...]:
    """The original designs (params counted) first, then Ultralytics' YAML names (params from the
    YAML's own summary line, the count Ultralytics publishes, where it counts the model training builds;
    else counted on a build: ``UltralyticsLoop.model_entries``)."""
    from yolomem.loops import get_loop

    entries = []
    for framework in ("yolov5", "ultralytics"):
        for name, family, params, task in get_loop(framework).model_entries():
            entries.append(ModelEntry(name, family, framework, params, task))
    return tuple(entries)
