"""Shared fixtures: one small generated dataset per test session, for every test file that needs data."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # so `import data` works from anywhere

import data  # noqa: E402


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory):
    """A 16x16 shapes set (400 train with the default defect mix, 40 val, 40 test, seed 0); returns the folder."""
    d = str(tmp_path_factory.mktemp("tiny_shapes"))
    data.main(["--out", d, "--size", "16", "--n-train", "400", "--n-val", "40", "--n-test", "40"])
    return d


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a shared machine extra threads only wait: use one, then restore."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def weights(path, key="model"):
    """A checkpoint's state_dict (or another key), loaded as data."""
    return torch.load(path, map_location="cpu", weights_only=True)[key]


def assert_same(a, b):
    """Two state_dicts hold bit-identical tensors under the same keys."""
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
