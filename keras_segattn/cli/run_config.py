"""What a command learns from the run folder a model was saved in (``config.json`` beside it).

``keras-segattn train`` saves ``config.json`` next to ``model.keras`` and its checkpoints'
folder, so ``evaluate`` and ``export --quantization int8`` use the dataset (and its config,
e.g. the synthetic ``32px``) that the run was trained on unless told otherwise.
"""

import json
import os

DATASET_KEYS = ("dataset_config", "data_dir", "manual_dir")


def run_config_for(model_path):
    """The ``config.json`` of the run that saved ``model_path`` (beside it, or in the run
    folder for ``<run>/checkpoints/*.keras``), or ``{}``."""
    folder = os.path.dirname(os.path.abspath(model_path))
    candidates = [folder]
    if os.path.basename(folder) == "checkpoints":
        candidates.append(os.path.dirname(folder))
    for candidate in candidates:
        path = os.path.join(candidate, "config.json")
        if os.path.isfile(path):
            try:
                with open(path) as f:
                    config = json.load(f)
            except (OSError, ValueError):
                return {}
            return config if isinstance(config, dict) else {}
    return {}


def fill_dataset_defaults(args, model_path, dataset_attr="dataset"):
    """Set ``args.<dataset_attr>`` (default ``synthetic``) and, when it is the run's
    dataset, ``dataset_config`` / ``data_dir`` / ``manual_dir`` left unset, from the run."""
    run = run_config_for(model_path)
    if getattr(args, dataset_attr) is None:
        setattr(args, dataset_attr, run.get("dataset") or "synthetic")
    if getattr(args, dataset_attr) == run.get("dataset"):
        for key in DATASET_KEYS:
            if getattr(args, key, None) is None and run.get(key):
                setattr(args, key, run[key])
    return run
