"""Convolution -> BatchNorm -> activation, the building block of every official head.

PyTorch references write this as ``nn.Conv2d(bias=False) + BatchNorm2d(eps=1e-5) + ReLU`` (or
InPlaceABN, whose default activation is LeakyReLU with slope 0.01). Keras' defaults differ
(``epsilon=1e-3``, ``LeakyReLU`` slope 0.3), so this layer fixes the PyTorch values.
"""

import keras

from keras_segattn import convert
from keras_segattn.layers._common import pointwise_conv
from keras_segattn.layers.batch_norm import apply_batch_norm
from keras_segattn.layers.conv import Conv2D

_ACTIVATIONS = ("relu", "leaky_relu", None)


@keras.saving.register_keras_serializable(package="keras_segattn")
class ConvBNAct(keras.layers.Layer):
    """``Conv2D(padding="same") -> BatchNormalization -> activation``.

    Args:
        filters: int, output channels.
        kernel_size: int, square kernel size. Default 1.
        strides: int. Default 1.
        dilation_rate: int. Default 1.
        use_bias: bool, conv bias. Default ``False`` (the references' choice before BN).
        use_norm: bool, apply BatchNormalization. Default ``True``.
        activation: ``"relu"``, ``"leaky_relu"`` or ``None``. Default ``"relu"``.
        negative_slope: float, LeakyReLU slope. Default 0.01 (InPlaceABN's default).
        epsilon: float, BN epsilon. Default 1e-5 (PyTorch).
        momentum: float, BN moving-average momentum (Keras meaning). Default 0.9
            (= PyTorch momentum 0.1).

    Input: ``(B, H, W, C)``; output: ``(B, H', W', filters)``.

    Example:
    >>> layer = ConvBNAct(16, kernel_size=3)
    >>> tuple(layer(keras.ops.ones((1, 8, 8, 4))).shape)
    (1, 8, 8, 16)
    """

    def __init__(
        self,
        filters,
        kernel_size=1,
        strides=1,
        dilation_rate=1,
        use_bias=False,
        use_norm=True,
        activation="relu",
        negative_slope=0.01,
        epsilon=1e-5,
        momentum=0.9,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"ConvBNAct: activation must be one of {_ACTIVATIONS}, got {activation!r}."
            )
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.dilation_rate = int(dilation_rate)
        self.use_bias = bool(use_bias)
        self.use_norm = bool(use_norm)
        self.activation = activation
        self.negative_slope = float(negative_slope)
        self.epsilon = float(epsilon)
        self.momentum = float(momentum)
        # Our Conv2D: Keras' layer, convolving the channels-last view directly on torch.
        self.conv = Conv2D(
            self.filters,
            self.kernel_size,
            strides=self.strides,
            dilation_rate=self.dilation_rate,
            padding="same",
            use_bias=self.use_bias,
            dtype=self.dtype_policy,
            name="conv",
        )
        self.norm = (
            keras.layers.BatchNormalization(
                epsilon=self.epsilon, momentum=self.momentum, dtype=self.dtype_policy, name="bn"
            )
            if self.use_norm
            else None
        )

    def build(self, input_shape):
        self.conv.build(input_shape)
        if self.norm is not None:
            self.norm.build(self.conv.compute_output_shape(input_shape))
        self.built = True

    def call(self, inputs, training=None):
        if self.kernel_size == 1 and self.strides == 1:
            x = pointwise_conv(self.conv, inputs)  # no NCHW round trip on torch
        else:
            x = self.conv(inputs)
        if self.norm is not None:
            x = apply_batch_norm(self.norm, x, training=training)
        if self.activation == "relu":
            x = keras.ops.relu(x)
        elif self.activation == "leaky_relu":
            x = keras.ops.leaky_relu(x, negative_slope=self.negative_slope)
        return x

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def reference_weight_mapping(self, conv_key="0", bn_key="1"):
        """Reference parameter names -> our variables, for ``convert.load_reference_weights``.

        ``conv_key``/``bn_key`` are the reference's module paths of the conv and BN; the
        defaults fit ``nn.Sequential(conv, bn, act)``. Heads pass e.g. ``"conv5a.0"``.
        """
        mapping = convert.conv_mapping(conv_key, self.conv)
        if self.norm is not None:
            mapping.update(convert.batch_norm_mapping(bn_key, self.norm))
        return mapping

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "dilation_rate": self.dilation_rate,
                "use_bias": self.use_bias,
                "use_norm": self.use_norm,
                "activation": self.activation,
                "negative_slope": self.negative_slope,
                "epsilon": self.epsilon,
                "momentum": self.momentum,
            }
        )
        return config
