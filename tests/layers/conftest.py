"""Fixtures shared by the layer tests."""

import json
import os

import numpy as np
import pytest

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "golden")


def _load_golden(case):
    """``(meta, arrays, params)`` of golden case ``case`` (see tests/golden/README.md).

    ``params`` maps the reference's parameter names to arrays (the ``param/`` entries).
    """
    with open(os.path.join(GOLDEN, f"{case}.json")) as f:
        meta = json.load(f)
    with np.load(os.path.join(GOLDEN, f"{case}.npz")) as data:
        arrays = {k: data[k] for k in data.files}
    params = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    return meta, arrays, params


@pytest.fixture(scope="session")
def load_golden():
    """The golden-case loader: ``meta, arrays, params = load_golden("danet_pam")``."""
    return _load_golden
