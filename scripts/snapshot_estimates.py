"""Write the ``--json`` estimate of every shipped detect YAML (batch 16, imgsz 640, AMP), one line each.

A refactor that should change nothing is checked by diffing two snapshots, taken before and after:

    python scripts/snapshot_estimates.py before.jsonl   # on the old commit
    python scripts/snapshot_estimates.py after.jsonl    # on the new one
    diff before.jsonl after.jsonl

``seconds`` (wall time) is dropped; everything else must be byte-identical.
"""

from __future__ import annotations

import json
import sys


def detect_yamls() -> list[str]:
    from ultralytics.nn.tasks import guess_model_task, yaml_model_load

    try:
        from yolomem.loops.ultralytics.models import shipped_model_names
    except ImportError:  # the layout before the one-room-per-stage move
        from yolomem.models import shipped_model_names

    names = []
    for name in shipped_model_names():
        try:
            if guess_model_task(yaml_model_load(name)) == "detect":
                names.append(name)
        except Exception:  # noqa: BLE001 - a YAML Ultralytics cannot read is not a detect model
            continue
    return names


def main(path: str, only: list[str]) -> None:
    import yolomem

    with open(path, "w") as out:
        for name in only or detect_yamls():
            try:
                record = yolomem.estimate(name, batch=16, imgsz=640, amp=True).to_json()
                record.pop("seconds", None)
            except Exception as error:  # noqa: BLE001 - a crash is part of the behaviour to keep
                record = {"model": name, "error": f"{type(error).__name__}: {error}"}
            out.write(json.dumps(record, sort_keys=True) + "\n")
            out.flush()
            print(name, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
