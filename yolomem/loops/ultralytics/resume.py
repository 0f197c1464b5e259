"""``yolo train resume model=last.pt``: the run a resume continues, as the installed release sets it up.

``BaseTrainer.check_resume`` replaces the line's arguments with the checkpoint's ``train_args`` and keeps
only those of the line that the release allows (8.4: imgsz, batch, device, close_mosaic, workers, cache,
freeze and a few more "to reduce memory"; earlier releases fewer). Rather than copy each release's list,
the installed release's own ``check_resume`` is run on a stand-in trainer, with its checkpoint loader
handing it the ``train_args`` read inertly (``yolomem.config.checkpoint_file``): no model is built.
"""

from __future__ import annotations

import contextlib
import inspect
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

from yolomem.errors import UserError

# Ultralytics' arguments that are estimate keys of the same name and meaning
_SAME_NAME = ("imgsz", "batch", "optimizer", "nbs", "freeze", "single_cls", "epochs", "cache", "workers", "mosaic",
              "close_mosaic", "scale", "translate", "device", "overlap_mask", "mask_ratio")  # fmt: skip
_LOADERS = ("load_checkpoint", "attempt_load_weights")  # what check_resume reads the checkpoint's args with


def checkpoint_of(resume: object, model: object) -> Path:
    """The checkpoint a resume continues: ``resume=path``, else the line's ``model=`` (``Model.train`` passes
    its own checkpoint path as ``resume``)."""
    named = resume if isinstance(resume, str) and resume.lower() not in {"true", "1", "yes"} else model
    if not named or Path(str(named)).suffix != ".pt" or not Path(str(named)).is_file():
        raise UserError(f"resume needs the run's checkpoint on disk: 'yolo train resume model=path/to/last.pt' "
                        f"(got {'model=' + str(named) if named else 'no model'})")  # fmt: skip
    return Path(str(named))


def resumed_arguments(checkpoint: Path, overrides: dict) -> dict:
    """The arguments the installed release's ``check_resume`` trains the resumed run with."""
    from ultralytics.cfg import get_cfg
    from ultralytics.engine import trainer as trainer_module

    from yolomem.config.checkpoint_file import read_checkpoint

    train_args = read_checkpoint(checkpoint).contents.get("train_args")
    if not isinstance(train_args, dict):
        raise UserError(f"checkpoint {str(checkpoint)!r} holds no train_args: not one Ultralytics' trainer saved")
    saved = SimpleNamespace(args=dict(train_args))
    trainer = SimpleNamespace(args=get_cfg(overrides={**overrides, "model": str(checkpoint), "resume": str(checkpoint)}))
    with contextlib.ExitStack() as patches:
        for name in _LOADERS:
            if hasattr(trainer_module, name):  # load_checkpoint returns (model, ckpt); attempt_load_weights the model
                answer = (saved, None) if name == "load_checkpoint" else saved
                patches.enter_context(mock.patch.object(trainer_module, name, lambda *_, answer=answer, **__: answer))
        check = trainer_module.BaseTrainer.check_resume
        if takes_overrides():
            check(trainer, dict(overrides))
        else:  # the checkpoint's arguments, all of them
            check(trainer)
    return vars(trainer.args)


def takes_overrides() -> bool:
    """Whether the installed ``check_resume`` lets the line change anything: it takes the line's overrides
    from 8.0.155; 8.0.154 and before resume with every argument of the checkpoint (found in the wheels)."""
    from ultralytics.engine import trainer as trainer_module

    return len(inspect.signature(trainer_module.BaseTrainer.check_resume).parameters) > 1


def resume_values(values: dict) -> tuple[dict, list[str]]:
    """Estimate ``values`` with the resumed run's settings in place of the line's, and what changed."""
    from yolomem.config.keys import ESTIMATE_KEYS

    checkpoint = checkpoint_of(values.get("resume"), values.get("model"))
    unresumable = _unresumable(checkpoint)
    if unresumable:
        return {**values, "resume": None}, [unresumable]
    given = {name: values[name] for name in _SAME_NAME if name in values}
    overrides = {name: _as_ultralytics(name, value) for name, value in given.items()}
    if values.get("data"):
        overrides["data"] = values["data"]
    resumed = resumed_arguments(checkpoint, overrides)
    out = {**values, "model": str(checkpoint), "resume": str(checkpoint)}
    notes = []
    for name in _SAME_NAME:
        if resumed.get(name) is None:
            continue  # the estimate's default: no freeze, no cache, one device
        value = ESTIMATE_KEYS[name].convert(str(resumed[name]) if name == "device" else resumed[name])
        if name in given and value != given[name]:
            notes.append(f"{name}={_shown(given[name])}: a resumed run keeps its checkpoint's {name}={_shown(value)} "
                         "(the installed release's check_resume)")  # fmt: skip
        out[name] = value
    out["amp"] = ESTIMATE_KEYS["amp"].convert(bool(resumed.get("amp", True)))
    if "amp" in values and out["amp"] != values["amp"]:
        notes.append(f"amp={values['amp']}: a resumed run keeps its checkpoint's amp={resumed.get('amp')}")
    if resumed.get("multi_scale"):  # a fraction from 8.4; True before it, sizes 0.5x-1.5x
        scale = resumed["multi_scale"]
        out["multi_scale"] = 0.5 if scale is True else float(scale)
    data = resumed.get("data")
    if data and not values.get("data"):
        from yolomem.config.dataset import dataset_here

        here, note = dataset_here(str(data))
        if here:
            out["data"] = here
        if note:
            notes.append(note)
    notes.insert(0, f"resume: {checkpoint.name}'s run as the installed release resumes it (its train_args; "
                    f"imgsz={out.get('imgsz')} batch={out.get('batch')})")  # fmt: skip
    return out, notes


def _unresumable(checkpoint: Path) -> str | None:
    """Why a resume of ``checkpoint`` is a new training run (a note), or None when it resumes. A finished
    run's checkpoint (``strip_optimizer``: epoch -1, no optimizer state) starts a new training from its weights
    where ``Model.train`` checks for that (8.4.129+; its own warning); before, ``resume_training`` stops."""
    from ultralytics.engine import model as model_module

    from yolomem.config.checkpoint_file import read_checkpoint

    model_class = getattr(model_module, "Model", None) or model_module.YOLO  # YOLO up to 8.0.135
    contents = read_checkpoint(checkpoint).contents
    epoch = contents["epoch"] if isinstance(contents.get("epoch"), int) else -1
    if epoch >= 0 and contents.get("optimizer") is not None:
        return None
    if "resumable training checkpoint" in inspect.getsource(model_class.train):
        return (f"resume: {checkpoint.name} is not a resumable training checkpoint (missing epoch/optimizer state); "
                "Ultralytics starts a new training from it, which is estimated")  # fmt: skip
    if epoch < 0:
        raise UserError(f"resume: {checkpoint.name}'s training is finished, nothing to resume (the installed "
                        "Ultralytics' resume_training stops there); train from it without resume")  # fmt: skip
    return None


def _as_ultralytics(name: str, value: object) -> object:
    if name == "freeze":
        return list(value) if value else None
    if name == "cache":
        return value or False
    return value


def _shown(value: object) -> str:
    return str(list(value)) if isinstance(value, tuple) else str(value)
