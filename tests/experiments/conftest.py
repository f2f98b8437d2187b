import pytest


@pytest.fixture
def real_data(data_dir, monkeypatch):
    """Experiments read the catalog datasets through $CNNLAB_DATA."""
    monkeypatch.setenv("CNNLAB_DATA", str(data_dir))
    return data_dir
