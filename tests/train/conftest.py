import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/train/train_helpers.py


def _data_root() -> Path | None:
    for root in (os.environ.get("CNNLAB_DATA"), Path(__file__).parents[3] / "shared" / "data"):
        if root and (Path(root) / "mnist" / "train-images-idx3-ubyte.gz").is_file():
            return Path(root)
    return None


@pytest.fixture
def mnist_root():
    root = _data_root()
    if root is None:
        pytest.skip("MNIST files not available (set CNNLAB_DATA)")
    return root
