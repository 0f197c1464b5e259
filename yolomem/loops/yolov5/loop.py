"""The yolov5 repo's train.py / val.py loop as a ``TrainingLoop`` (``framework=yolov5``)."""

from __future__ import annotations

from yolomem.config.models import ResolvedModel
from yolomem.loops.base import CacheClears, TracedRun, max_stride_of_fake_build


class Yolov5Loop:
    name = "yolov5"
    carries_loop_variables = True  # imgs, pred, loss, loss_items, mloss: train.py's loop variables
    traces_whole_val_pass = True  # val.run's preds/train_out and per-image locals carry from batch to batch
    needs_whole_split = True  # train.py, segment/ and classify/train.py assert batch_size % WORLD_SIZE == 0

    def cache_clears(self) -> CacheClears:
        return CacheClears()  # train.py never empties the cache

    def owns(self, spec: str) -> bool:
        from yolomem.loops.yolov5.names import is_original_only

        return is_original_only(str(spec))  # yolov4, yolov5s (anchor-based), .cfg files

    def resolve(self, spec: str, requested: str) -> ResolvedModel:
        from yolomem.loops.yolov5.names import resolve_original

        return resolve_original(str(spec), requested)

    def model_names(self) -> tuple[str, ...]:
        from yolomem.loops.yolov5.names import original_names

        return original_names()

    def model_entries(self):
        from yolomem.loops.yolov5.names import find_original
        from yolomem.loops.yolov5.runner import count_params

        for name in self.model_names():
            original = find_original(name)
            yield name, original.family, count_params(original), original.task

    def stride(self, resolved: ResolvedModel, nc: int | None) -> int:
        # not on the meta device: the stride is read from the tensor the build's forward pass makes
        from yolomem.loops.yolov5.runner import build_original, original_of

        return max_stride_of_fake_build(lambda: build_original(original_of(resolved), nc or resolved.nc))

    def count_params(self, resolved: ResolvedModel, nc: int | None = None) -> int:
        from yolomem.loops.yolov5.runner import count_params, original_of

        return count_params(original_of(resolved), nc or resolved.nc)

    def gflops(self, model: str, imgsz: int) -> tuple[float | None, str]:
        from yolomem.loops.yolov5.names import find_original
        from yolomem.loops.yolov5.runner import count_gflops

        return count_gflops(find_original(model), imgsz), "counted"

    def trace(self, config, resolved, *, fake: bool = True, oracle=None, after_iterations=None, density=None,
              upper: bool = True) -> TracedRun:
        from yolomem.loops.yolov5.runner import trace_yolov5_run

        return trace_yolov5_run(config, resolved, fake=fake, oracle=oracle, after_iterations=after_iterations,
                                density=density, upper=upper)  # fmt: skip

    def optimizer_steps(self, iterations: int, batch: int, nbs: int) -> tuple[bool, ...]:
        from yolomem.loops.base import optimizer_steps
        from yolomem.loops.yolov5.step import accumulate_at

        return optimizer_steps(accumulate_at, iterations, batch, nbs)

    def ddp_note(self, world_size: int, per_rank: int) -> str:
        from yolomem.loops.yolov5.runner import ddp_note

        return ddp_note(world_size, per_rank)

    def gpu_mem_unit(self) -> str:
        return "GB"  # train.py prints torch.cuda.memory_reserved() / 1E9

    def oom_retries(self, config) -> tuple[str, int]:
        return "the yolov5 repo's train.py", 0  # it catches no out-of-memory error

    def precision(self, config, resolved) -> tuple[str, str | None]:
        """The repo has no precision option. train.py and segment/train.py: ``amp = check_amp(model)``, fp16
        autocast where its check passes ("AMP: checks passed"), fp32 where it fails; classify/train.py:
        ``autocast(enabled=cuda)``, fp16 on every GPU."""
        from yolomem.loops.yolov5.classify import PRECISION as CLASSIFY_PRECISION

        if resolved.task == "classify":
            if config.amp == CLASSIFY_PRECISION:
                return config.amp, None
            return CLASSIFY_PRECISION, (f"amp={config.amp}: classify/train.py trains with AMP whenever CUDA is there "
                                        f"(autocast(enabled=cuda)); estimated with {CLASSIFY_PRECISION}")  # fmt: skip
        if config.amp == "fp32":
            return "fp32", ("amp=false: train.py has no such option; it trains in fp32 only where check_amp fails "
                            "('AMP: checks failed'), else with fp16 AMP; estimated in fp32 as asked")  # fmt: skip
        if config.amp == "bf16":
            return "fp16", ("amp=bf16: train.py has no bf16; it trains with fp16 AMP where check_amp passes (fp32 "
                            "where it fails); estimated with fp16")  # fmt: skip
        return config.amp, None

    def trainer_defaults(self, resolved) -> dict[str, tuple[int, str]]:
        """classify/train.py's own ``--imgsz 224`` and ``--batch-size 64``; train.py and segment/train.py
        default to 640 and 16, yolomem's defaults."""
        if resolved.task != "classify":
            return {}
        from yolomem.loops.yolov5.classify import BATCH, IMGSZ

        return {"imgsz": (IMGSZ, "classify/train.py's default"), "batch": (BATCH, "classify/train.py's default")}

    def trained_imgsz(self, config, resolved) -> tuple[int, str | None]:
        return config.imgsz, None

    def default_epochs(self, resolved) -> tuple[int, str]:
        """``--epochs``' default: 100 in train.py and segment/train.py, 10 in classify/train.py (read from each
        script's parser in tests/test_fit.py)."""
        if resolved.task == "classify":
            return 10, "classify/train.py's --epochs default"
        script = "segment/train.py" if resolved.task == "segment" else "train.py"
        return 100, f"{script}'s --epochs default"

    def epochs_supported(self, resolved, world_size: int) -> bool:
        return resolved.task in {"detect", "segment"} and world_size == 1

    def kept_images(self, dataset, resolved):
        """The repo's ``verify_image_label`` leaves out images whose rows it cannot read
        (``yolomem.loops.yolov5.labels``) but does not look at classes; train.py then stops on the train
        split's highest one (``assert mlc < nc, f'Label class {mlc} exceeds nc={nc} ...'``)."""
        from yolomem.errors import UserError
        from yolomem.loops.yolov5.labels import judge_labels

        dataset = judge_labels(dataset)

        highest = dataset.train.highest_class
        if dataset.classes is not None and highest >= dataset.classes:
            raise UserError(f"data={dataset.yaml_path}: a train label has class {highest}, and the YAML names "
                            f"{dataset.classes}; the yolov5 repo's train.py stops (\"Label class {highest} exceeds "
                            f"nc={dataset.classes}\"); name every class in 'names'")  # fmt: skip
        return dataset

    def val_batch_size(self, task: str, train_batch: int) -> int:
        return 2 * train_batch  # train.py: val_loader at batch_size // WORLD_SIZE * 2

    def refuse_autobatch(self, config, resolved) -> None:
        from yolomem.loops.yolov5.autobatch import check_request

        check_request(config, resolved)

    def pick_autobatch(self, config, resolved, gpu, densest_image: int, dataset_size: int | None):
        """train.py's AutoBatch reads no labels: ``densest_image`` and ``dataset_size`` do not change its pick."""
        from yolomem.loops.yolov5.autobatch import pick_batch

        return pick_batch(config, resolved, gpu, config.autobatch)

    def trace_val_pass(self, run, shapes, seed: int, nc: int, kpt_shape, channels: int) -> None:
        """val.run over the pass's batches, then train.py's checkpoint (``deepcopy(...).half()``)."""
        from yolomem.loops.yolov5.val_pass import trace_val_pass

        trace_val_pass(run, shapes, seed, channels)
        run.save_checkpoint()
