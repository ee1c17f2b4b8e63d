"""``train(config)``: the standard segmentation recipe as one function (used by the CLI).

Iteration-based like mmsegmentation: ``config.steps`` optimizer steps in intervals of
``config.eval_every`` steps (one Keras epoch each; the last interval is shorter when
``steps`` is not a multiple), an evaluation, a resume point and (every
``checkpoint_every`` steps) a ``.keras`` checkpoint after each interval, SGD(momentum 0.9,
weight decay 5e-4, lr 0.01) with :class:`WarmupPolyDecay` (or ``optimizer="adamw"``: AdamW
with the same schedule, default lr 3e-3), SCCE on logits with ignore index 255 and an
auxiliary head at weight 0.4 (the model's ``compile()`` defaults), mIoU/mAcc/aAcc.

Re-running with the same ``output_dir`` continues an interrupted run exactly: the model,
optimizer, schedule and dropout states come from the last completed interval
(:mod:`keras_segattn.training.run_dir`) and the training pipeline starts at that step's
batch (``make_pipeline(start_batch=...)``), so the resumed run computes what the
uninterrupted one would have. Re-running a finished run reports its result.
"""

import dataclasses
import datetime
import json
import os
import sys
import time

import keras

from keras_segattn import evaluation, recipe, validation
from keras_segattn.training import callbacks as callbacks_lib
from keras_segattn.training import distribution as distribution_lib
from keras_segattn.training.run_dir import (RunDirectory, ScalarLog, atomic_save_model,
                                            atomic_write_text)

MIXED_PRECISION = (None, "mixed_float16", "mixed_bfloat16")
OPTIMIZERS = ("auto", "sgd", "adamw")
# Training augmentation: "full" = mmseg's random rescale + crop + flip + photometric
# distortion; "flip" = random crop + horizontal flip only (images keep the dataset's base
# scale); "none" = random crop only (a no-op when the crop is the image size). "auto":
# "flip" on the synthetic dataset (its cue -> class rule is learned within a CPU budget
# without rescaling / photometric noise: 1500 steps reach mIoU ~0.62 at 32px, while "full"
# stayed at ~0.23 after 3000 steps), "full" elsewhere.
AUGMENTATIONS = ("auto", "full", "flip", "none")
# Peak learning rate when ``learning_rate`` is None: mmseg's SGD value (batch 8), and the
# AdamW value measured on the synthetic dataset (benchmarks/learning.py).
DEFAULT_LEARNING_RATES = {"sgd": 0.01, "adamw": 3e-3}


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run; saved as ``config.json`` beside the checkpoints.

    The defaults are the CLI's no-argument run: DANet on ``resnet_tiny`` (OS8) on the
    built-in ``synthetic`` dataset (``dataset_config=None`` resolves to its ``32px``
    config, crop 32x32), flips only (``augment="auto"``), AdamW lr 3e-3 poly, batch 8,
    1500 steps (eval every 500): a few CPU minutes (2 cores), and the cue -> class rule is
    learned (see ``tests/training/test_learning.py`` and the README for measured numbers).

    ``optimizer="auto"`` resolves (in ``validate``) to ``"adamw"`` on the synthetic dataset
    (SGD with momentum does not learn its cue -> class mapping within a CPU budget, see
    ``benchmarks/learning.py``) and to ``"sgd"`` (the mmsegmentation recipe) elsewhere;
    ``learning_rate=None`` to ``DEFAULT_LEARNING_RATES[optimizer]``; ``augment="auto"``
    to ``"flip"`` on the synthetic dataset and ``"full"`` elsewhere (see
    ``AUGMENTATIONS``).

    ``sync_batch_norm=True`` (``--sync-bn``) normalises with the statistics of the global
    batch under ``tf.distribute`` (mmsegmentation's SyncBN; see
    ``keras_segattn.layers.set_synchronized_batch_norm``); JAX ``data_parallel`` does so
    already, and on one device it changes nothing.
    """

    model: str = "danet"
    backbone: str = "resnet_tiny"
    output_stride: int = 8
    dataset: str = "synthetic"
    data_dir: str = None
    manual_dir: str = None
    dataset_config: str = None
    train_split: str = "train"
    val_split: str = "validation"
    num_classes: int = None
    crop_size: tuple = None
    augment: str = "auto"
    batch_size: int = 8
    steps: int = 1500
    eval_every: int = 500
    checkpoint_every: int = None
    keep_checkpoints: int = 3
    optimizer: str = "auto"
    learning_rate: float = None
    end_learning_rate: float = 1e-4
    warmup_steps: int = 0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    head_lr_multiplier: float = 1.0
    gradient_accumulation_steps: int = None
    distribution: str = "auto"
    mixed_precision: str = None
    sync_batch_norm: bool = False
    output_dir: str = None
    seed: int = 0
    eval_mode: str = "whole"
    eval_max_batches: int = None
    tensorboard: bool = True
    verbose: object = "auto"
    model_kwargs: dict = dataclasses.field(default_factory=dict)

    def validate(self):
        """Check every field (one-line ``ValueError`` naming it) and resolve the ``"auto"``
        and ``None`` defaults; returns ``self``."""
        for name in ("learning_rate", "end_learning_rate", "momentum", "weight_decay",
                     "head_lr_multiplier"):
            if getattr(self, name) is not None:
                validation.check_finite(getattr(self, name), name)
        for name in ("steps", "eval_every", "batch_size", "keep_checkpoints"):
            setattr(self, name, validation.check_positive_int(getattr(self, name), name))
        for name in ("checkpoint_every", "num_classes", "eval_max_batches"):
            setattr(self, name, validation.check_positive_int(getattr(self, name), name,
                                                              allow_none=True))
        if self.gradient_accumulation_steps is not None and (
                validation.check_positive_int(self.gradient_accumulation_steps,
                                              "gradient_accumulation_steps") < 2):
            raise ValueError("gradient_accumulation_steps must be >= 2 (or None); got "
                             f"{self.gradient_accumulation_steps!r}.")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) \
                or not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"warmup_steps must be an integer in [0, steps={self.steps}); got "
                             f"{self.warmup_steps!r}.")
        if self.output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32; got {self.output_stride!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0; got {self.seed!r}.")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1); got {self.momentum!r}.")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0; got {self.weight_decay!r}.")
        if self.end_learning_rate < 0:
            raise ValueError(f"end_learning_rate must be >= 0; got {self.end_learning_rate!r}.")
        if self.checkpoint_every and self.checkpoint_every % self.eval_every:
            raise ValueError(
                f"checkpoint_every ({self.checkpoint_every}) must be a multiple of eval_every "
                f"({self.eval_every}): checkpoints are written at the end of an interval."
            )
        if self.dataset == "synthetic" and self.dataset_config is None:
            self.dataset_config = "32px"  # the demo: learns the cue in a few CPU minutes
        if self.dataset == "synthetic" and self.crop_size is None:
            size = str(self.dataset_config).split("px")[0]  # configs are named "<size>px..."
            if size.isdigit():
                self.crop_size = (int(size), int(size))
        if self.dataset_config is not None:  # before a run folder or a dataset is made
            from keras_segattn import data

            data.check_config(self.dataset, self.dataset_config)
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {AUGMENTATIONS}; got {self.augment!r}.")
        if self.augment == "auto":
            self.augment = "flip" if self.dataset == "synthetic" else "full"
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}; got {self.optimizer!r}.")
        if self.optimizer == "auto":
            self.optimizer = "adamw" if self.dataset == "synthetic" else "sgd"
        if self.learning_rate is None:
            self.learning_rate = DEFAULT_LEARNING_RATES[self.optimizer]
        if self.head_lr_multiplier <= 0:
            raise ValueError(f"head_lr_multiplier must be > 0; got {self.head_lr_multiplier}.")
        if self.head_lr_multiplier != 1.0 and self.optimizer != "sgd":
            raise ValueError("head_lr_multiplier is an SGD option (the official recipes'); "
                             f"optimizer is {self.optimizer!r}.")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0; got {self.learning_rate}.")
        if self.end_learning_rate > self.learning_rate:
            raise ValueError(f"end_learning_rate ({self.end_learning_rate}) must be <= "
                             f"learning_rate ({self.learning_rate}).")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(
                f"mixed_precision must be one of {MIXED_PRECISION}; got {self.mixed_precision!r}."
            )
        if not isinstance(self.sync_batch_norm, bool):
            raise ValueError(f"sync_batch_norm must be True or False; got {self.sync_batch_norm!r}.")
        if self.distribution not in distribution_lib.DISTRIBUTIONS:
            raise ValueError(f"unknown distribution {self.distribution!r}; choose from "
                             f"{list(distribution_lib.DISTRIBUTIONS)}.")
        if self.eval_mode not in evaluation.INFERENCE_MODES:
            raise ValueError(f"unknown eval_mode {self.eval_mode!r}; choose from "
                             f"{list(evaluation.INFERENCE_MODES)}.")
        if self.crop_size is not None:
            crop = tuple(int(c) for c in self.crop_size)
            if len(crop) != 2 or min(crop) <= 0:
                raise ValueError(f"crop_size must be (height, width); got {self.crop_size!r}.")
            self.crop_size = crop
        if self.output_dir is None:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            self.output_dir = os.path.join("runs", f"{self.model}-{stamp}")
        return self

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["crop_size"] = list(self.crop_size) if self.crop_size else None
        return d

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known - {"_run"})
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known: {sorted(known)}.")
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def load(cls, path):
        """Read ``config.json`` (a file or a run directory containing one)."""
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        if not os.path.exists(path):
            raise ValueError(f"no run configuration at {path!r} (expected a run directory "
                             "written by `keras-segattn train`).")
        with open(path) as f:
            return cls.from_dict(json.load(f))


# --- data -------------------------------------------------------------------------------------


def _dataset_info(config):
    from keras_segattn import data

    return data.dataset_info(config.dataset)


def build_datasets(config, global_batch_size, start_step=0):
    """(train, val) ``tf.data`` pipelines from :mod:`keras_segattn.data`.

    Training: endless, shuffled, augmented as ``config.augment`` says,
    ``drop_remainder=True`` (every batch divides by the replica count), starting at batch
    ``start_step`` of the stream (a resumed run continues with the batches the
    uninterrupted run would have seen). Validation: one pass, full-size images, partial
    batch kept (the evaluator pads it under JAX ``DataParallel``).
    """
    from keras_segattn import data

    kwargs = {}
    if config.data_dir:
        kwargs["data_dir"] = config.data_dir
    if config.manual_dir:
        kwargs["manual_dir"] = config.manual_dir
    if config.dataset_config:
        kwargs["config"] = config.dataset_config
    info = data.dataset_info(config.dataset)
    train_ds = data.load(config.dataset, config.train_split, **kwargs)
    val_ds = data.load(config.dataset, config.val_split, **kwargs)
    small = config.dataset == "synthetic"  # fits in memory: decode once
    augment = {"full": {}, "flip": dict(ratio_range=(1.0, 1.0), photometric=False),
               "none": dict(ratio_range=(1.0, 1.0), photometric=False, flip_prob=0.0)}
    train = data.make_pipeline(
        train_ds, training=True, crop_size=config.crop_size, batch_size=global_batch_size,
        scale=info.scale, num_classes=info.num_classes, name=config.dataset, seed=config.seed,
        drop_remainder=True, repeat=True, cache=small, start_batch=start_step,
        **augment[config.augment])
    val = data.make_pipeline(
        val_ds, training=False, batch_size=global_batch_size, eval_scale=info.scale,
        num_classes=info.num_classes, name=config.dataset, drop_remainder=False, cache=small)
    return train, val


# --- model ------------------------------------------------------------------------------------


def recipe_arguments(config):
    """The ``keras_segattn.recipe`` numbers of a run (``Segmenter.compile`` keywords)."""
    return dict(optimizer_type=config.optimizer, steps=config.steps,
                learning_rate=config.learning_rate, momentum=config.momentum,
                weight_decay=config.weight_decay, end_learning_rate=config.end_learning_rate,
                warmup_steps=config.warmup_steps, head_lr_multiplier=config.head_lr_multiplier,
                gradient_accumulation_steps=config.gradient_accumulation_steps)


def build_optimizer(config, model=None):
    """The run's optimizer: ``keras_segattn.recipe.optimizer`` (AdamW, or SGD as mmseg/PyTorch
    define it; ``head_lr_multiplier`` on every variable outside ``model``'s backbone)."""
    return recipe.optimizer(model, **recipe_arguments(config))


def build_model(config, num_classes):
    """Build + compile the model with the standard recipe (inside a distribution scope)."""
    from keras_segattn import models

    kwargs = dict(config.model_kwargs)
    kwargs.setdefault("backbone", config.backbone)
    kwargs.setdefault("output_stride", config.output_stride)
    model = models.get(config.model, num_classes=num_classes, **kwargs)
    if config.sync_batch_norm:  # SyncBN under tf.distribute (a no-op elsewhere: see there)
        from keras_segattn.layers import set_synchronized_batch_norm

        set_synchronized_batch_norm(model)
    model.compile(**recipe_arguments(config))  # the recipe: saved with the model, reloads compiled
    return model


def one_image_batch_norm_note(model, images_per_batch_norm):
    """A warning for a model that cannot train on ``images_per_batch_norm`` images, or None.

    The CAA head's image-level branch normalises the pooled feature, one value per image and
    channel: with one image in its BN's statistics the branch outputs BN's ``beta`` and gets
    no gradient (``heads.CAAHead``). PyTorch refuses such a batch; Keras trains on silently.
    """
    from keras_segattn.heads import CAAHead

    if images_per_batch_norm != 1 or not isinstance(getattr(model, "decode_head", None),
                                                    CAAHead):
        return None
    return ("keras-segattn: warning: with 1 image per batch normalisation the CAA head's "
            "image-level branch does not train; use a batch of at least 2 images per replica "
            "(or --sync-bn across replicas).")


# --- train ------------------------------------------------------------------------------------

# Fields a rerun may change without changing what the run computes.
_RESUMABLE_CHANGES = ("output_dir", "data_dir", "manual_dir", "verbose", "tensorboard",
                      "keep_checkpoints")


def _verbose(config):
    if config.verbose != "auto":
        return config.verbose
    return 1 if sys.stdout.isatty() else 2


def _check_same_run(run, config):
    """A run folder with committed progress continues only with the settings it started with."""
    saved = run.read_json("config.json")
    if saved is None:
        return
    saved.pop("_run", None)
    current = config.to_dict()
    differences = [f"{key}: {saved.get(key)!r} there, {current[key]!r} here"
                   for key in current if key not in _RESUMABLE_CHANGES
                   and key in saved and saved[key] != current[key]]
    if differences:
        raise ValueError(
            f"{run.path} holds a run with other settings ({'; '.join(differences[:3])}"
            f"{'; ...' if len(differences) > 3 else ''}); continue it with its own settings "
            f"(keras-segattn train --resume {run.path}) or choose another output_dir.")


def _history_dict(rows):
    keys = sorted({k for row in rows for k in row} - {"epoch"})
    return {k: [row.get(k) for row in rows] for k in keys}


def _rewind(state, step):
    """``state`` as it was at ``step`` (a backup older than the newest was restored)."""
    return dict(state, step=step, finished=False,
                backups=[b for b in state["backups"] if b["step"] <= step],
                history=[r for r in state["history"] if r["step"] <= step],
                evaluation=None)


def _finished_result(run, state, log):
    """What ``train`` returns for a run that finished earlier: its saved model and metrics."""
    import keras_segattn.models  # noqa: F401  (registers the classes for load_model)

    model_path = run.file("model.keras")
    validation.check_keras_file(model_path, "the run's model")
    metrics = run.read_json("metrics.json")
    # A Ctrl-C after the finished state was written but before backup/ was removed leaves
    # it behind: finish the clean-up.
    run.remove("backup")
    log(f"{run.path} finished all {state['step']} steps earlier: reporting its result "
        "(choose another output_dir to train again).", flush=True)
    return {"model": keras.saving.load_model(model_path),
            "history": _history_dict(state["history"]),
            "metrics": evaluation.EvaluationResult(metrics) if metrics else None,
            "output_dir": run.path, "model_path": model_path, "seconds": state.get("seconds", 0.0),
            "distribution": None, "resumed_from": state["step"], "already_finished": True}


def train(config, callbacks=(), train_dataset=None, val_dataset=None, log=print):
    """Train a model as described by ``config`` (a :class:`TrainConfig` or a dict).

    Writes to ``config.output_dir`` (layout and crash-safety in
    :mod:`keras_segattn.training.run_dir`): ``config.json``, ``state.json``, ``backup/``,
    ``checkpoints/``, ``history.csv``, ``logs/`` (TensorBoard) and, once finished,
    ``model.keras`` and ``metrics.json`` (``backup/`` is then removed). Running again with
    the same ``output_dir`` resumes after the last completed interval ("Resuming <dir> from
    step N of M") and ends where the uninterrupted run ends; on a finished run it returns the
    saved result without training. A folder holding a run with other settings is refused.

    Args:
        config: :class:`TrainConfig` or dict of its fields.
        callbacks: extra Keras callbacks (run first).
        train_dataset: optional training data replacing the :mod:`keras_segattn.data`
            pipeline (``config.num_classes`` and ``crop_size`` are then required): a
            function ``start_step -> dataset`` (endless, batched), so a resumed run gets the
            batches from its step on, or a dataset (then a resumed run restarts it from its
            first batch, and says so).
        val_dataset: optional batched evaluation dataset.
        log: where progress lines go (``print``).

    Returns:
        dict with ``model``, ``history`` (dict of lists, one entry per interval, with
        ``step``), ``metrics`` (:class:`~keras_segattn.evaluation.EvaluationResult`),
        ``output_dir``, ``model_path``, ``seconds`` (training time over all launches),
        ``distribution``, ``resumed_from`` (the step this launch started at) and
        ``already_finished``.
    """
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    config.validate()
    class_names = None
    num_classes = config.num_classes
    custom_train = train_dataset is not None
    if not custom_train:
        info = _dataset_info(config)
        num_classes = num_classes or info.num_classes
        class_names = list(info.class_names)
        if config.crop_size is None:
            config.crop_size = tuple(info.crop_size)
    elif config.crop_size is None:
        raise ValueError("config.crop_size is required with a custom train_dataset.")
    elif num_classes is None:
        raise ValueError("config.num_classes is required with a custom train_dataset.")
    if distribution_lib.resolve_distribution(config.distribution) == "multi_worker":
        distribution_lib.multi_worker_strategy()  # before any TF op (builds the datasets)
        # Only the chief writes to output_dir; other workers to output_dir/workers/<task>.
        config.output_dir = distribution_lib.worker_output_dir(config.output_dir)
    # Made with its first file (config.json, once the model is built): a run that fails while
    # it is set up (a backbone name, missing data) leaves no empty folder behind.
    run = RunDirectory(validation.check_output_dir(config.output_dir, "output_dir",
                                                   create=False))
    run.remove_temporaries()
    state = run.read_state()
    if state is None and os.path.exists(run.file("backup", "training_metadata.json")):
        raise ValueError(
            f"{run.path} holds a run of an earlier keras-segattn (Keras BackupAndRestore files "
            "in backup/), which cannot be continued exactly; choose another output_dir (its "
            "checkpoints/ stay usable with keras-segattn evaluate/export).")
    if state is not None:
        _check_same_run(run, config)
        if state.get("finished"):
            return _finished_result(run, state, log)
    start_step = state["step"] if state else 0

    launch_start = time.time()

    def make_train(step):
        if not custom_train:
            return None
        return train_dataset(step) if callable(train_dataset) else train_dataset

    if custom_train:
        train_data = make_train(start_step)
    else:  # first: missing data fails fast, before building the model
        train_data, val_dataset = build_datasets(config, config.batch_size, start_step=start_step)
    previous_policy = keras.mixed_precision.global_policy().name
    scalar_log = None
    try:
        if config.mixed_precision:
            keras.mixed_precision.set_global_policy(config.mixed_precision)
        # Seeded here, after the datasets: preparing a dataset on first use draws random
        # numbers (its generator), and the weights must not depend on whether it did. The
        # data pipeline has its own explicit seeds.
        keras.utils.set_random_seed(config.seed)
        with distribution_lib.distribution_scope(config.distribution) as dist:
            if config.batch_size % dist.num_replicas:
                raise ValueError(
                    f"batch_size {config.batch_size} (global) must be divisible by the "
                    f"{dist.num_replicas} replicas of distribution {dist.kind!r}.")
            model = build_model(config, num_classes)
            # Batch statistics over the global batch with --sync-bn and on JAX (its data
            # parallelism reduces them), over each replica's share otherwise.
            global_statistics = config.sync_batch_norm or keras.backend.backend() == "jax"
            note = one_image_batch_norm_note(
                model, config.batch_size if global_statistics
                else config.batch_size // dist.num_replicas)
        if note:
            log(note, flush=True)
        if state is not None:
            step = run.restore(model, state, log=lambda m: log(m, flush=True))
            if step != state["step"]:
                state = _rewind(state, step)
                train_data = make_train(step) if custom_train else build_datasets(
                    config, config.batch_size, start_step=step)[0]
            iterations = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
            if iterations != step:
                raise ValueError(f"{run.path}: the backup of step {step} holds an optimizer at "
                                 f"iteration {iterations}; the run folder is inconsistent.")
            log(f"Resuming {run.path} from step {step} of {config.steps}.", flush=True)
            if custom_train and not callable(train_dataset):
                log("keras-segattn: the custom train_dataset restarts from its first batch; pass "
                    "a function of the start step for an exact resume.", flush=True)
        else:
            state = {"version": 1, "step": 0, "total_steps": config.steps, "finished": False,
                     "backups": [], "history": [], "evaluation": None, "seconds": 0.0}
        run.prune_checkpoints(state["step"])
        train_data = distribution_lib.prepare_dataset(train_data, dist.kind)
        record = config.to_dict()
        record["_run"] = {"backend": keras.backend.backend(), "keras": keras.__version__,
                          "distribution": dist.kind, "num_replicas": dist.num_replicas,
                          "num_classes": num_classes}
        atomic_write_text(run.file("config.json"), json.dumps(record, indent=2))
        run.write_history(state["history"])
        if config.tensorboard:
            scalar_log = ScalarLog(run.file("logs"), state["history"])
        eval_cb = None
        if val_dataset is not None:
            eval_cb = callbacks_lib.EvaluationCallback(
                val_dataset, num_classes, class_names=class_names, mode=config.eval_mode,
                max_batches=config.eval_max_batches, steps_per_epoch=config.eval_every,
                total_steps=config.steps)
        progress = callbacks_lib.RunProgress(
            run, state, config.eval_every, config.steps,
            checkpoint_every=config.checkpoint_every or config.eval_every,
            keep_checkpoints=config.keep_checkpoints, evaluation_callback=eval_cb,
            scalar_log=scalar_log, launch_start=launch_start)
        verbose = _verbose(config)
        cbs = [*callbacks, *([eval_cb] if eval_cb else []), progress]
        if verbose:
            cbs.append(callbacks_lib.IntervalProgbar(config.eval_every, config.steps))
        interrupt = callbacks_lib.InterruptAtStepEnd()
        cbs.append(interrupt)  # last: it raises after RunProgress's commit of the step
        intervals = -(-config.steps // config.eval_every)
        if state["step"] < config.steps:
            try:
                with validation.one_line_errors():
                    model.fit(train_data, epochs=intervals,
                              initial_epoch=state["step"] // config.eval_every,
                              steps_per_epoch=config.eval_every, callbacks=cbs,
                              verbose=verbose, shuffle=False)
            finally:
                interrupt.restore()
            state = progress.state
        return _finish(run, model, state, dist, config, resumed_from=start_step)
    finally:
        if scalar_log is not None:
            scalar_log.close()
        keras.mixed_precision.set_global_policy(previous_policy)


def _finish(run, model, state, dist, config, resumed_from):
    """Write ``model.keras`` and ``metrics.json``, mark the run finished, drop ``backup/``."""
    if state["step"] < config.steps:  # fit returned early: an extra callback stopped it
        raise RuntimeError(f"training stopped at step {state['step']} of {config.steps} (a "
                           f"callback set stop_training); rerun to continue from there.")
    model_path = run.file("model.keras")
    if config.sync_batch_norm:  # inference does not need it; keep model.keras portable
        from keras_segattn.layers import set_synchronized_batch_norm

        set_synchronized_batch_norm(model, False)
    atomic_save_model(model, model_path)
    metrics = state.get("evaluation")
    if metrics is not None:
        atomic_write_text(run.file("metrics.json"), json.dumps(
            dict(metrics, steps=state["step"]), indent=2, allow_nan=True))
        metrics = evaluation.EvaluationResult(metrics)
    state = dict(state, finished=True, backups=[])
    run.write_state(state)
    run.remove("backup")
    return {"model": model, "history": _history_dict(state["history"]), "metrics": metrics,
            "output_dir": run.path, "model_path": model_path, "seconds": state["seconds"],
            "distribution": dist, "resumed_from": resumed_from, "already_finished": False}
