"""Per-channel image normalisation inside the model: ``(x - mean) / std``.

Every model in ``keras_segattn.models`` takes RGB images with values in ``[0, 255]`` (any
numeric dtype) and normalises them with the ImageNet statistics used by mmsegmentation's
``SegDataPreProcessor`` (``mean=[123.675, 116.28, 103.53]``, ``std=[58.395, 57.12, 57.375]``,
RGB order). Keeping the normalisation inside the model makes exported models take raw pixels.
"""

import keras
from keras import ops

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@keras.saving.register_keras_serializable(package="keras_segattn")
class ImageNormalization(keras.layers.Layer):
    """Cast to float and normalise channels: ``y = (float(x) - mean) / std``.

    Args:
        mean: sequence of per-channel means (pixel units). Default: ImageNet RGB means in
            ``[0, 255]`` units as used by mmsegmentation.
        std: sequence of per-channel standard deviations. Default: ImageNet RGB stds.

    Input: ``(B, H, W, C)`` of any numeric dtype with ``C == len(mean)``; output: same shape
    in the layer's compute dtype.

    Example:
    >>> layer = ImageNormalization()
    >>> y = layer(keras.ops.full((1, 2, 2, 3), 123.675))
    >>> float(keras.ops.convert_to_numpy(y)[0, 0, 0, 0])
    0.0
    """

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD, **kwargs):
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if len(self.mean) != len(self.std):
            raise ValueError(
                f"ImageNormalization: mean has {len(self.mean)} values but std has "
                f"{len(self.std)}; give one value per channel in both."
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"ImageNormalization: std values must be positive, got {self.std}.")

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                f"ImageNormalization: expected a 4-D (B, H, W, C) input, got shape {input_shape}."
            )
        if input_shape[-1] is not None and input_shape[-1] != len(self.mean):
            raise ValueError(
                f"ImageNormalization: the input has {input_shape[-1]} channels but mean/std "
                f"have {len(self.mean)} values; pass RGB images or set mean= and std=."
            )
        self.built = True

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        mean = ops.convert_to_tensor(self.mean, dtype="float32")
        std = ops.convert_to_tensor(self.std, dtype="float32")
        return ops.cast((x - mean) / std, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"mean": list(self.mean), "std": list(self.std)})
        return config
