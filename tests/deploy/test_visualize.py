import os
import sys

import numpy as np
import pytest
from PIL import Image

from deploy_helpers import attention_model, real_model
from keras_segattn.visualize import attention_maps, criss_cross_dense, plot_attention

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_attention_maps_of_every_kind():
    model = attention_model()
    image = np.random.default_rng(0).uniform(0, 255, (48, 64, 3))
    entries = {e["kind"]: e for e in attention_maps(model, image, pixel=(10, 20))}
    assert set(entries) == {"position", "channel", "criss_cross"}
    position = entries["position"]
    assert position["feature_size"] == (12, 16) and position["query"] == (2, 5)
    np.testing.assert_allclose(position["map"].sum(), 1.0, atol=1e-5)
    assert entries["channel"]["matrix"].shape == (16, 16)
    cc = entries["criss_cross"]
    assert len(cc["passes"]) == 2  # the shared layer is called twice (R = 2)
    first = cc["passes"][0]
    # One pass only reaches the query's row and column ...
    mask = np.zeros((12, 16), bool)
    mask[2, :] = True
    mask[:, 5] = True
    assert np.all(first[~mask] == 0) and np.isclose(first.sum(), 1.0, atol=1e-5)
    # ... after R = 2 every pixel contributes, weights still sum to one.
    assert np.all(cc["effective"] > 0)
    np.testing.assert_allclose(cc["effective"].sum(), 1.0, atol=1e-4)


def test_criss_cross_dense_matches_definition():
    rng = np.random.default_rng(0)
    attention = rng.random((3, 4, 7)).astype("float32")
    dense = criss_cross_dense(attention)
    # Query (1, 2): column entries (i, 2), row entries (1, j).
    q = 1 * 4 + 2
    np.testing.assert_allclose(dense[q, 0 * 4 + 2], attention[1, 2, 0])
    np.testing.assert_allclose(dense[q, 1 * 4 + 3], attention[1, 2, 3 + 3])
    np.testing.assert_allclose(dense[q, q], attention[1, 2, 1] + attention[1, 2, 3 + 2])


def test_plot_png(tmp_path):
    model = real_model("danet") or attention_model()
    out = str(tmp_path / "danet_attention.png")
    sys.path.insert(0, os.path.join(ROOT, "docs", "images"))
    try:
        from make_danet_attention import make_picture
    except ImportError:
        make_picture = None
    finally:
        sys.path.pop(0)
    if make_picture is not None and real_model("danet") is not None:
        make_picture(out)
    else:
        plot_attention(model, np.random.default_rng(0).uniform(0, 255, (64, 64, 3)), output=out)
    image = np.asarray(Image.open(out))
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 200
    assert image.reshape(-1, image.shape[-1]).std(axis=0).max() > 10  # not blank


def test_visualize_cli(tmp_path):
    from keras_segattn.cli import main

    model_path = str(tmp_path / "m.keras")
    attention_model().save(model_path)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), np.uint8)).save(tmp_path / "i.png")
    assert main(["visualize", "--model", model_path, "--image", str(tmp_path / "i.png"),
                 "--pixel", "5", "30", "--output", str(tmp_path / "v.png")]) == 0
    assert Image.open(tmp_path / "v.png").format == "PNG"
    with pytest.raises(SystemExit):
        main(["visualize", "--model", model_path])


def test_scale_attention_weights_of_attention_to_scale(tmp_path):
    import keras_segattn

    model = keras_segattn.models.AttentionToScale(num_classes=3, backbone="resnet_tiny")
    image = np.random.default_rng(0).uniform(0, 255, (40, 48, 3))
    (entry,) = attention_maps(model, image, pixel=(5, 6))
    assert entry["kind"] == "scale" and entry["feature_size"] == (5, 6)
    weights = entry["weights"]
    assert weights.shape == (5, 6, 3)  # one weight per scale (1.0, 0.75, 0.5) and pixel
    assert np.all(weights > 0)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)  # softmax over scales
    plot_attention(model, image, pixel=(5, 6), output=str(tmp_path / "scales.png"))
    assert Image.open(tmp_path / "scales.png").size[0] > 100
