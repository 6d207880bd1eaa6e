import pytest

from starmd.data.prepare import prepare
from tests.conftest import ASSETS


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """The bundled 1am7 MD prepared as a one-protein training set (plus a val copy)."""
    root = tmp_path_factory.mktemp("train_data")
    prepare(ASSETS / "demo" / "1am7", root, fractions=(1, 0, 0))
    return root
