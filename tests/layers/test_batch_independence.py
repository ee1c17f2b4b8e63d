"""Every attention layer segments each image of a batch on its own.

Upstream FLANet tiled its descriptors over the whole batch, so for batch > 1 each image was
attended with another image's descriptors (``mechanisms.md``); the golden cases run batch 1
and cannot see such a mix-up. Here, in inference, changing the second image of a batch must
leave the first image's output exactly as it was, and each image's output in the batch must
equal its output alone. The weights are scaled up and every ``gamma`` set to 1 so that the
attention decides the output (at initialisation ``gamma = 0`` hides it, and small kernels
give near-uniform attention maps that hardly depend on the other image).
"""

import keras
import numpy as np
import pytest

from keras_segattn import layers

CHANNELS = 16
LAYERS = {
    "PositionAttention": lambda: layers.PositionAttention(),
    "ChannelAttention": lambda: layers.ChannelAttention(),
    "CrissCrossAttention": lambda: layers.CrissCrossAttention(),
    "EfficientAttention": lambda: layers.EfficientAttention(
        key_channels=8, value_channels=16, num_heads=2),
    "ChannelizedAxialAttention": lambda: layers.ChannelizedAxialAttention(CHANNELS,
                                                                          key_channels=8),
    "FullyAttentional": lambda: layers.FullyAttentional(),
    "LinearPositionAttention": lambda: layers.LinearPositionAttention(),
    "LinearChannelAttention": lambda: layers.LinearChannelAttention(),
    "InterlacedSparseAttention": lambda: layers.InterlacedSparseAttention(
        key_channels=8, value_channels=8, down_factor=(4, 4)),
    "NonLocalBlock": lambda: layers.NonLocalBlock(),
    "SqueezeAttention": lambda: layers.SqueezeAttention(CHANNELS),
}


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_each_image_of_a_batch_is_attended_alone(name):
    rng = np.random.default_rng(0)
    images = (rng.normal(size=(2, 11, 13, CHANNELS)) * 3).astype("float32")
    keras.utils.set_random_seed(1)
    layer = LAYERS[name]()
    layer(images[:1])
    for variable in layer.weights:
        if variable.path.endswith("gamma") and tuple(variable.shape) == (1,):
            variable.assign(np.ones((1,), "float32"))
        elif variable.path.endswith("kernel"):
            variable.assign(_numpy(variable) * 3)

    together = _numpy(layer(images, training=False))
    other = images.copy()
    other[1] = rng.normal(size=images[1].shape) * 3
    changed = _numpy(layer(other, training=False))
    # The second image changed: its output moved, the first image's did not.
    assert np.abs(changed[1] - together[1]).max() > 1e-2 * np.abs(together[1]).max()
    np.testing.assert_allclose(changed[0], together[0], rtol=0,
                               atol=1e-6 * np.abs(together[0]).max())
    # Alone, up to float rounding: PyTorch's oneDNN convolutions (the 1x1 projections on
    # torch) choose their kernels by batch size, which changes the order of the sums;
    # criss-cross attention's scaled-up energies turn that into 1e-4 of its outputs. (A mix-up
    # of images moves them by far more, as the exact check above shows.)
    for i in range(2):
        np.testing.assert_allclose(together[i:i + 1], _numpy(layer(images[i:i + 1],
                                                                     training=False)),
                                   rtol=1e-4, atol=1e-4 * np.abs(together[i]).max(),
                                   err_msg=f"image {i}")
