"""Activation checkpointing: a real CPU training step is numerically unchanged, and the trace shows
less activation memory."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import torch

from yolomem.loops.checkpointing import checkpoint_callback, checkpointed_layers, default_layer_indices, unwrap_layers, wrap_layers
from yolomem.result.estimate import estimate
from yolomem.loops import resolve_model
from yolomem.loops.ultralytics.step import build_model


def _model_and_batch():
    from ultralytics.cfg import get_cfg

    torch.manual_seed(0)
    resolved = resolve_model("yolov8n.yaml")
    model = build_model(resolved.cfg, resolved.task, None)
    model.args = get_cfg()
    model.train()
    generator = torch.Generator().manual_seed(1)
    batch = {
        "img": torch.rand(2, 3, 64, 64, generator=generator),
        "cls": torch.tensor([[0.0], [5.0], [17.0]]),
        "bboxes": torch.tensor([[0.5, 0.5, 0.4, 0.3], [0.3, 0.6, 0.2, 0.2], [0.7, 0.4, 0.3, 0.5]]),
        "batch_idx": torch.tensor([0.0, 0.0, 1.0]),
    }
    return model, batch


def _step(model, batch):
    model.zero_grad(set_to_none=True)
    loss, items = model(batch)
    loss.sum().backward()
    return loss.detach().clone(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_wrapped_step_gives_identical_loss_and_gradients():
    model, batch = _model_and_batch()
    wrapped = copy.deepcopy(model)
    keys = list(wrapped.state_dict())
    indices = wrap_layers(wrapped)
    assert indices == checkpointed_layers(wrapped) and len(indices) > 10
    assert list(wrapped.state_dict()) == keys  # ModelEMA.update indexes the state dict by these keys
    for i, layer in enumerate(wrapped.model):  # _predict_once routes with .f and .i
        assert (layer.f, layer.i) == (model.model[i].f, model.model[i].i)

    loss, grads = _step(model, batch)
    wrapped_loss, wrapped_grads = _step(wrapped, batch)
    assert torch.equal(loss, wrapped_loss)
    assert grads.keys() == wrapped_grads.keys() and len(grads) > 100
    for name in grads:
        torch.testing.assert_close(wrapped_grads[name], grads[name], rtol=0, atol=1e-6, msg=name)


def test_recompute_really_happens_and_unwrap_restores():
    model, batch = _model_and_batch()
    layer = model.model[default_layer_indices(model)[-1]]
    calls = []
    layer.register_forward_hook(lambda *_: calls.append(1))
    inner = next(m for m in layer.modules() if isinstance(m, torch.nn.Conv2d))
    inner_calls = []
    inner.register_forward_hook(lambda *_: inner_calls.append(1))
    checkpoint_callback(SimpleNamespace(model=model))  # what Ultralytics calls at on_pretrain_routine_end
    _step(model, batch)
    assert len(calls) == 1 and len(inner_calls) == 2  # the layer's inside ran again in backward
    unwrap_layers(model)
    assert checkpointed_layers(model) == () and "forward" not in layer.__dict__
    inner_calls.clear()
    _step(model, batch)
    assert len(inner_calls) == 1


def test_no_recompute_in_eval_or_no_grad():
    model, batch = _model_and_batch()
    wrap_layers(model)
    model.eval()
    with torch.no_grad():
        model(batch["img"])  # no checkpoint machinery in validation


def _peak_live(trace, category: str) -> int:
    live, peak, sizes = 0, 0, {}
    for event in trace.events:
        if event.category != category:
            continue
        if event.op == "alloc":
            sizes[event.storage_id] = event.nbytes
            live += event.nbytes
            peak = max(peak, live)
        else:
            live -= sizes.pop(event.storage_id, 0)
    return peak


def test_checkpoint_lowers_traced_activation_memory():
    plain = estimate("yolov8n.yaml", batch=4, imgsz=160, iterations=1)
    checked = estimate("yolov8n.yaml", batch=4, imgsz=160, iterations=1, checkpoint=True)
    assert _peak_live(checked.trace, "activation") < 0.7 * _peak_live(plain.trace, "activation")
    assert not any("not modelled" in note for note in checked.notes)
    recomputed = [e for e in checked.trace.events if e.op == "alloc" and e.phase == "backward" and e.dtype == "float16"]
    assert recomputed  # the recompute ran under the autocast emulation (fp16 activations in backward)
