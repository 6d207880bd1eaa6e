import pytest

from starmd.data.prepare import prepare
from tests.conftest import ASSETS

# a test-sized training configuration (``TrainConfig.from_yaml(None, TINY)``)
TINY = [
    "model.preset=tiny",
    "data.window=3",
    "data.dt_ps=[100.0, 200.0]",
    "data.crop=12",
    "data.batch_size=2",
    "data.samples_per_epoch=4",
    "optim.warmup_steps=1",
]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """The bundled 1am7 MD prepared as a one-protein training set (plus a val copy)."""
    root = tmp_path_factory.mktemp("train_data")
    prepare(ASSETS / "demo" / "1am7", root, fractions=(1, 0, 0))
    return root


@pytest.fixture(scope="session")
def tiny_dataset_with_val(tmp_path_factory):
    """1am7 for training and a renamed copy of it as the validation protein."""
    import shutil

    md = tmp_path_factory.mktemp("md_with_val")
    for name in ("1am7", "1am7v"):
        (md / name).mkdir()
        for suffix in (".pdb", "_prod_R1_fit.xtc"):
            shutil.copy(ASSETS / "demo" / "1am7" / f"1am7{suffix}", md / name / f"{name}{suffix}")
    (md / "split.csv").write_text("name,split\n1am7,train\n1am7v,val\n")
    root = tmp_path_factory.mktemp("train_data_val")
    prepare(md, root, split_files=[md / "split.csv"])
    return root
