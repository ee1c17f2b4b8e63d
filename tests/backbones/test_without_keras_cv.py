"""keras-cv is optional: the package imports and every backbone family works without it."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys

    class NoKerasCV:  # make `import keras_cv` fail as if it were not installed
        def find_spec(self, name, path=None, target=None):
            if name == "keras_cv" or name.startswith("keras_cv."):
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, NoKerasCV())
    import keras
    import keras_hub

    import keras_segattn
    from keras_segattn import backbones, models

    for name in ("resnet_tiny", "resnet_tiny_v2", "resnet_tiny_v1c"):
        backbones.get_backbone(name, output_stride=8)
    hub = keras_hub.models.ResNetBackbone(
        input_conv_filters=[16], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 8, 8, 8],
        stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2],
        block_type="bottleneck_block")
    model = models.FCN(num_classes=2, backbone=hub, output_stride=16, channels=4, aux_channels=4)
    assert type(model.backbone).__name__ == "DilatedKerasHubResNetBackbone"
    spec = model.compute_output_spec(keras.KerasTensor((1, 32, 32, 3)))
    assert spec["logits"].shape == (1, 32, 32, 2)
    try:
        backbones.get_backbone("resnet50_kerascv", weights="imagenet")
    except ImportError as error:
        assert "pip install 'keras-segattn[kerascv]'" in str(error), error
    else:
        raise AssertionError("no ImportError")
    assert "keras_cv" not in sys.modules
    print("OK without keras_cv")
""")


def test_package_works_without_keras_cv():
    # The import guard does not depend on the backend; TensorFlow builds the networks fastest
    # (JAX compiles every initializer shape in a fresh process: ~1 minute).
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "PYTHONPATH": os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))]
        + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK without keras_cv" in result.stdout
