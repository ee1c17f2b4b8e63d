"""Manual check of the preset table against the real mmsegmentation 1.2.2 code (not run in CI).

For every preset: mmseg's registry builds the model from the preset's config (``meta``
device) with the table's parameter count; our model built from the preset's options has
exactly mmseg's state-dict keys, each with the right shape (ISANet: reported, it needs
mmseg's ISAHead layout first). For one preset per portable model (and the align_corners=True
variant), mmseg's model with random weights and BN statistics is ported with
``load_reference_weights`` and its ``encode_decode`` logits are compared with ours.

Run in a throwaway environment that has mmsegmentation 1.2.2, mmengine and mmcv-lite (the
compiled mmcv ops are not needed: ``mmcv.ops`` is replaced by a module that loads only the
pure-PyTorch ``cc_attention.py`` and ``point_sample.py`` of mmcv-lite), once per backend::

    KERAS_BACKEND=jax python tests/models/check_against_mmseg.py /path/to/mmseg/.mim/configs
"""

import importlib.util
import json
import os
import sys
import types

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]


def _mmcv_ops_without_compiled_ops():
    import mmcv

    ops_dir = os.path.join(os.path.dirname(mmcv.__file__), "ops")
    ops = types.ModuleType("mmcv.ops")
    ops.__path__ = [ops_dir]
    sys.modules["mmcv.ops"] = ops

    def load(name):
        spec = importlib.util.spec_from_file_location(f"mmcv.ops.{name}",
                                                      os.path.join(ops_dir, f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module

    class Missing:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("this mmcv op needs the compiled mmcv")

    def getattr_(name):
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (Missing,), {})

    ops.__getattr__ = getattr_
    ops.CrissCrossAttention = load("cc_attention").CrissCrossAttention
    ops.point_sample = load("point_sample").point_sample


def _mmseg_model(configs, entry, device):
    import torch
    from mmengine.config import Config
    from mmseg.registry import MODELS

    config = Config.fromfile(os.path.join(configs, entry["mmseg_config"][len("configs/"):]))
    model_cfg = config.model
    model_cfg.pretrained = None
    for part in ("backbone", "decode_head", "auxiliary_head"):
        model_cfg[part]["norm_cfg"] = dict(type="BN", requires_grad=True)
    with torch.device(device):
        return MODELS.build(model_cfg)


def main(configs):
    _mmcv_ops_without_compiled_ops()
    import keras
    import numpy as np
    import torch
    from mmseg.utils import register_all_modules

    import torch_mmseg_reference as ref
    from keras_segattn import convert, models
    from keras_segattn.layers.normalization import ImageNormalization
    from keras_segattn.models import presets

    register_all_modules()
    report = {"backend": keras.backend.backend(), "layout": {}, "logits": {}}
    built = {}
    for name, entry in sorted(presets.PRESETS.items()):
        mmseg_model = _mmseg_model(configs, entry, "meta")
        count = sum(p.numel() for p in mmseg_model.parameters())
        assert count == entry["params"], (name, count, entry["params"])
        state = {k: tuple(v.shape) for k, v in mmseg_model.state_dict().items()
                 if not k.endswith("num_batches_tracked")}
        key = json.dumps(dict(entry["options"], align_corners=None), sort_keys=True)
        if key not in built:
            built[key] = models.get(entry["model"], **entry["options"])
        model = built[key]
        try:
            mapping = model.reference_weight_mapping()
        except ValueError as error:
            assert "requires" in entry, (name, error)
            report["layout"][name] = f"not portable yet: {str(error)[:60]}..."
            continue
        assert sorted(mapping) == sorted(state), name
        for k, (variable, layout) in mapping.items():
            shape = state[k]
            if layout == "conv":
                shape = shape[2:] + (shape[1], shape[0])
            assert int(np.prod(variable.shape)) == int(np.prod(shape)), (name, k)
            if len(shape) > 1:
                assert tuple(variable.shape) == shape, (name, k)
        report["layout"][name] = f"{len(mapping)} keys mapped"

    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 97, 3)).astype("float32")
    normalized = keras.ops.convert_to_numpy(ImageNormalization()(images))
    for name in ("fcn_resnet50_cityscapes_512x1024_40k", "nonlocal_resnet50_ade20k_512x512_80k",
                 "danet_resnet50_cityscapes_512x1024_40k", "danet_resnet50_cityscapes_769x769_40k",
                 "ccnet_resnet50_voc_aug_512x512_20k"):
        entry = presets.PRESETS[name]
        mmseg_model = ref.randomize(_mmseg_model(configs, entry, "cpu"), seed=1)
        metas = [dict(img_shape=images.shape[1:3])] * len(images)
        with torch.no_grad():
            expected = mmseg_model.encode_decode(
                torch.from_numpy(normalized.transpose(0, 3, 1, 2).copy()), metas)
        expected = expected.numpy().transpose(0, 2, 3, 1)
        model = models.get(entry["model"], **entry["options"])
        convert.load_reference_weights(model, mmseg_model.state_dict())
        logits = keras.ops.convert_to_numpy(model(images, training=False)["logits"])
        error = float(np.abs(logits - expected).max())
        scale = float(np.abs(expected).max())
        report["logits"][name] = {"max_abs_error": error, "max_abs_logit": scale}
        assert error <= 1e-4 * max(1.0, scale), (name, error, scale)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
