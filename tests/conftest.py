import os
from pathlib import Path

import pytest
import torch

# pytest -n 2 runs two workers on two cores: one intra-op thread each avoids oversubscription,
# which made the zoo tests ~10x slower.
torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The offline datasets: $CNNLAB_DATA, else ../shared/data beside the checkout."""
    root = Path(os.environ.get("CNNLAB_DATA", SHARED_DATA))
    if not (root / "mnist").is_dir():
        pytest.skip(f"real datasets not found in {root} (set CNNLAB_DATA)")
    return root


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
