"""Inference: whole-image, sliding-window and multi-scale prediction, predictors, image I/O.

* ``modes``: ``predict_logits(model, images, mode="whole"|"slide"|"multiscale", ...)``
  (mmseg's test-time modes; ``check_options`` checks its options before any image),
  ``slide_windows``, ``resize_logits`` (the one resize);
* ``batching``: one batch through a model (``forward``, ``select_logits``,
  ``predict_on_batch`` sharded over the devices under a JAX ``keras.distribution``,
  ``inference_model``);
* ``predictors``: ``load_predictor`` of a ``.keras`` file, a SavedModel directory or a
  ``.tflite`` file, ``run_tflite``;
* ``images``: ``load_image``, ``colorize``, ``overlay`` and ``predict_files`` (the engine of
  ``keras-segattn predict``).

``model`` can be a Keras model (outputs a tensor, a list, or a dict with ``"logits"``), a
``Predictor``, or any callable mapping a float32 ``(B, H, W, 3)`` NumPy batch of RGB values
in ``[0, 255]`` to ``(B, H, W, C)`` logits. Everything is NumPy + ``keras.ops`` and runs on
every backend. ``keras_segattn.evaluation``, ``export`` and the command line use these
public functions.
"""

from keras_segattn.inference.batching import (
    data_parallel_size, fixed_input_size, forward, inference_model, pad_batch, predict_on_batch,
    select_logits,
)
from keras_segattn.inference.images import (
    IMAGE_EXTENSIONS, colorize, expand_inputs, load_image, overlay, predict_files, to_rgb_uint8,
)
from keras_segattn.inference.modes import (
    DEFAULT_SCALES, MODES, check_images, check_options, keep_ratio_size, predict_logits,
    resize_logits, slide_windows, softmax,
)
from keras_segattn.inference.predictors import (
    Predictor, load_predictor, run_tflite, tflite_interpreter,
)
