"""Every model name yolomem builds, from each training loop, with family, parameters and task."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    framework: str
    params: int  # published (an Ultralytics YAML's summary line) or counted on a build: list_models says which
    task: str


def list_models() -> tuple[ModelEntry, ...]:
    """The original designs (params counted) first, then Ultralytics' YAML names (params from the
    YAML's own summary line, the count Ultralytics publishes; counted on a build where the YAML has none:
    ``yolomem.loops.ultralytics.models.counted_params``)."""
    from yolomem.loops import get_loop

    entries = []
    for framework in ("yolov5", "ultralytics"):
        for name, family, params, task in get_loop(framework).model_entries():
            entries.append(ModelEntry(name, family, framework, params, task))
    return tuple(entries)
