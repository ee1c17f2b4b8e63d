"""Fixtures of the deployment tests: the synthetic dataset."""

import numpy as np
import pytest


@pytest.fixture(scope="session")
def synthetic_images(tmp_path_factory):
    """16 images of the built-in synthetic dataset (tfds), uint8 (64, 64, 3)."""
    from keras_segattn import data

    ds = data.load("synthetic", "validation[:16]", data_dir=str(tmp_path_factory.mktemp("tfds")))
    return np.stack([np.asarray(e["image"]) for e in ds.as_numpy_iterator()])
