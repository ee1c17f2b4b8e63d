"""``MaxPooling2D``: ``keras.layers.MaxPooling2D`` whose ``padding="same"`` compiles under
``torch.compile``.

Backend adapter (PyTorch only), on purpose; every other backend, ``"valid"`` pooling and
``"same"`` pooling whose padding is symmetric call Keras' own layer.

Keras' ``padding="same"`` pads ``total = max((ceil(n / s) - 1) * s + k - n, 0)`` along each
spatial axis, ``total // 2`` before and the rest after, and padded positions never win a
window. PyTorch's pooling pads symmetrically, so where ``total`` is odd Keras' torch backend
(3.15) pads the channels-first input itself, with ``mode="replicate"`` (copies of the edge).
Inductor (``torch==2.13.0``) fails on the gradient of that padding when the pooled map comes
from our ``BatchNormalization`` (channels-last memory): it asserts a contiguous
``replication_pad2d_backward`` output that the kernel writes channels-last (``AssertionError:
expected size 64==64, stride 1==256``). That broke ``model.compile(jit_compile=True)`` on torch
for every model on a KerasCV-layout backbone (``resnet_tiny``, the CLI's default), whose stem
pools 3x3 / 2 "same" an even-sized map, at its first step.

Here the uneven "same" padding is a constant ``-inf`` pad (``torch.nn.functional.pad``, whose
gradient is a slice) before a "valid" pooling: ``-inf`` never wins a window, and every "same"
window holds a real element, so the result is Keras' (and TensorFlow's) exactly.

Same config and class name as Keras' layer; tests: ``tests/layers/test_pooling.py``.
"""

import keras
from keras import ops

from keras_segattn.layers._common import pad, same_padding


@keras.saving.register_keras_serializable(package="keras_segattn")
class MaxPooling2D(keras.layers.MaxPooling2D):
    """``keras.layers.MaxPooling2D`` whose uneven ``"same"`` padding on torch is a ``-inf``
    constant pad (see the module docstring): it compiles under ``torch.compile``.

    The KerasCV-layout backbones' stem uses it. Example:
    >>> pool = MaxPooling2D(3, strides=2, padding="same")
    >>> x = keras.ops.reshape(keras.ops.arange(16, dtype="float32"), (1, 4, 4, 1))
    >>> keras.ops.convert_to_numpy(pool(x))[0, :, :, 0].tolist()
    [[10.0, 11.0], [14.0, 15.0]]
    """

    def call(self, inputs):
        spatial_shape = tuple(inputs.shape[1:3])
        if (keras.backend.backend() != "torch" or self.padding != "same"
                or self.data_format != "channels_last" or None in spatial_shape):
            return super().call(inputs)
        pairs = same_padding(spatial_shape, self.pool_size, self.strides)
        if all(before == after for before, after in pairs):
            return super().call(inputs)  # PyTorch's own symmetric padding
        padded = pad(inputs, [(0, 0), *pairs, (0, 0)], constant_values=float("-inf"))
        return ops.max_pool(padded, self.pool_size, self.strides, "valid", self.data_format)
