"""starmd prepare on real MD, the dataset layout, splits, and lazy windows."""

import csv
import shutil

import numpy as np
import pytest
import torch

from starmd.data import store
from starmd.data.dataset import TrajectoryWindowDataset, WindowSpec, collate_windows
from starmd.data.prepare import hash_split, prepare, read_split_files
from starmd.errors import StarmdInputError
from starmd.structure import geometry
from starmd.structure.io import iter_trajectory
from starmd.structure.rigid import Rigid
from tests.conftest import ASSETS

MD = ASSETS / "demo" / "1am7"


@pytest.fixture(scope="module")
def atlas_dir(tmp_path_factory):
    """The bundled 1am7 MD in the ATLAS layout (NAME.pdb + NAME_prod_R1_fit.xtc)."""
    return MD


@pytest.fixture(scope="module")
def dataset(atlas_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("dataset")
    rows = prepare(atlas_dir, out, split_files=[], fractions=(1, 0, 0))
    return out, rows


def test_prepare_writes_index_and_reads_time_step_from_the_file(dataset):
    out, rows = dataset
    assert [(r.name, r.replica, r.frames, r.residues, r.split) for r in rows] == [
        ("1am7", 1, 51, 158, "train")
    ]
    assert rows[0].dt_ps == pytest.approx(100.0)  # XTC time stamps, not the ATLAS default
    assert store.read_index(out) == rows
    assert (out / "prepare.json").exists()
    assert not (out / "dataset.zarr.partial").exists()


def _superposed_rmsd(a, b):
    """RMSD (Angstrom) of point sets (n, 3) after optimal superposition (Kabsch)."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    u, _, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1, 1, d]) @ vt
    return float(np.sqrt(((a @ rot - b) ** 2).sum(-1).mean()))


def test_dataset_windows_rebuild_the_md_frames(dataset, atlas_dir):
    out, _ = dataset
    ds = TrajectoryWindowDataset(out, "train", WindowSpec(window=5, dt_ps=(200.0,), crop=None))
    item = ds.window("1am7", 1, stride=2, rng=np.random.default_rng(0), start=10)
    ((protein, positions, _),) = list(
        iter_trajectory(atlas_dir / "1am7.pdb", atlas_dir / "1am7_prod_R1_fit.xtc")
    )
    aatype = torch.from_numpy(protein.aatype)
    oxt = torch.from_numpy(protein.oxt_mask)
    rebuilt = geometry.frames_to_atoms(
        Rigid.from_tensor_7(item["frames"].double()), item["torsions"].double(), aatype, oxt
    ).numpy()
    mask = geometry.rebuilt_atom_mask(aatype, oxt).numpy() & protein.atom_mask
    for k, frame in enumerate(range(10, 19, 2)):
        original = positions[frame]
        backbone = _superposed_rmsd(rebuilt[k][:, :4][mask[:, :4]], original[:, :4][mask[:, :4]])
        heavy = _superposed_rmsd(rebuilt[k][mask], original[mask])
        # MD snapshots at 300 K deviate from ideal geometry more than crystal structures (here
        # mostly the carbonyl O out of the peptide plane, ~6 degrees std, and the N-CA-C angle):
        # 0.09 A backbone / 0.32 A heavy atoms on this trajectory. That idealization, not
        # storage, is the loss (crystal structures: see tests/structure/test_geometry.py).
        assert backbone < 0.12 and heavy < 0.4, (frame, backbone, heavy)
        direct = geometry.frames_to_atoms(
            geometry.atoms_to_frames(torch.from_numpy(original)),
            geometry.atoms_to_torsions(
                torch.from_numpy(original),
                aatype,
                torch.from_numpy(protein.atom_mask),
                torch.from_numpy(protein.linked_prev),
            )[0],
            aatype,
            oxt,
        ).numpy()
        # storage (float32 quaternions) adds < 1e-3 A to the idealization error
        assert np.abs(direct[mask] - rebuilt[k][mask]).max() < 2e-3


def test_windows_have_shapes_masks_and_time(dataset):
    out, _ = dataset
    spec = WindowSpec(window=4, dt_ps=(100.0, 300.0), crop=40, crop_mode="spatial")
    ds = TrajectoryWindowDataset(out, "train", spec, samples_per_epoch=6, seed=3)
    items = [ds[i] for i in range(6)]
    for it in items:
        assert it["frames"].shape == (4, 40, 7) and it["torsions"].shape == (4, 40, 7)
        assert it["aatype"].shape == (40,) and it["residue_mask"].all()
        assert it["torsion_mask"].shape == (40, 7) and it["atom_mask"].shape == (40, 15)
        assert float(it["dt_ps"]) in (100.0, 300.0)
        torch.testing.assert_close(it["time_ps"], torch.arange(4.0) * it["dt_ps"])
        quat_norm = it["frames"][..., :4].norm(dim=-1)
        torch.testing.assert_close(quat_norm, torch.ones_like(quat_norm))
    # deterministic in (seed, epoch, index)
    again = TrajectoryWindowDataset(out, "train", spec, samples_per_epoch=6, seed=3)
    torch.testing.assert_close(again[2]["frames"], items[2]["frames"])
    again.set_epoch(1)
    assert not torch.equal(again[2]["frames"], items[2]["frames"])


def test_collate_pads_residues(dataset):
    out, _ = dataset
    ds = TrajectoryWindowDataset(out, "train", WindowSpec(window=2, dt_ps=(100.0,), crop=30))
    a, b = ds[0], ds[1]
    b = {
        k: (v[..., :20, :] if k in ("frames", "torsions") else v[:20] if v.dim() else v)
        if k not in ("time_ps", "dt_ps")
        else v
        for k, v in b.items()
    }
    batch = collate_windows([a, b])
    assert batch["frames"].shape == (2, 2, 30, 7)
    assert batch["residue_mask"][1].sum() == 20 and batch["residue_mask"][0].all()
    assert (batch["aatype"][1, 20:] == 20).all()
    torch.testing.assert_close(batch["frames"][1, :, 20:, 0], torch.ones(2, 10))


def test_short_replicas_give_shorter_windows_at_long_time_steps(dataset):
    """51 frames at 100 ps: 8 frames fit at 500 ps (span 36) but only 6 at 1 ns (span 51);
    with min_window 6 the 1 ns step is used with 6-frame windows, and a batch is cut to its
    shortest window."""
    out, _ = dataset
    strict = TrajectoryWindowDataset(out, "train", WindowSpec(window=8, dt_ps=(500.0, 1000.0)))
    assert {(stride, n) for _, stride, n in strict.choices} == {(5, 8)}
    spec = WindowSpec(window=8, dt_ps=(500.0, 1000.0), crop=30, min_window=6)
    ds = TrajectoryWindowDataset(out, "train", spec, samples_per_epoch=20, seed=1)
    assert {(stride, n) for _, stride, n in ds.choices} == {(5, 8), (10, 6)}
    items = [ds[i] for i in range(20)]  # the 1 ns windows have 1 start of 17: rarely drawn
    assert all(len(it["time_ps"]) == {500.0: 8, 1000.0: 6}[float(it["dt_ps"])] for it in items)
    long_step = ds.window("1am7", 1, stride=10, rng=np.random.default_rng(0), length=6)
    torch.testing.assert_close(long_step["time_ps"], torch.arange(6.0) * 1000.0)
    short_step = items[0]
    batch = collate_windows([short_step, long_step])
    assert batch["frames"].shape == (2, 6, 30, 7) and batch["time_ps"].shape == (2, 6)
    torch.testing.assert_close(batch["frames"][0], short_step["frames"][:6])
    with pytest.raises(StarmdInputError, match="min_window"):
        WindowSpec(window=4, min_window=5)
    with pytest.raises(StarmdInputError, match="long enough"):
        TrajectoryWindowDataset(out, "train", WindowSpec(window=8, dt_ps=(2000.0,), min_window=4))


def test_input_from_trajectory_conditions_on_a_replica_frame_outside_the_window(dataset):
    """With probability 1 a window's conditioning structure is one of the replica's own frames
    (never one of the window's), with its torsions; at 0 the prepared input structure, and the
    windows are exactly those drawn without the option."""
    out, _ = dataset
    plain = WindowSpec(window=4, dt_ps=(100.0,), crop=None)
    swapped = WindowSpec(window=4, dt_ps=(100.0,), crop=None, input_from_trajectory=1.0)
    group = store.open_store(out)
    all_frames = group["proteins/1am7/R1/frames"][...]
    all_torsions = group["proteins/1am7/R1/torsions"][...]
    input_frames = group["proteins/1am7/init_frames"][...]
    base = TrajectoryWindowDataset(out, "train", plain, samples_per_epoch=8, seed=2)
    ds = TrajectoryWindowDataset(out, "train", swapped, samples_per_epoch=8, seed=2)
    # p = 0 draws nothing extra: each window's start and spatial crop are the first draws of
    # its generator, as before the option existed (runs of older configs stay reproducible)
    cropped = WindowSpec(window=4, dt_ps=(100.0,), crop=40, crop_mode="spatial")
    off = TrajectoryWindowDataset(out, "train", cropped)
    for i in range(8):
        rng = np.random.default_rng([0, 0, i])  # (seed, epoch, index)
        rng.choice(1, p=[1.0])  # the (only) replica and time step
        start = int(rng.integers(0, len(all_frames) - 4 + 1))
        ca = all_frames[start, :, 4:]
        centre = int(rng.integers(0, len(ca)))
        near = np.sort(np.argsort(np.linalg.norm(ca - ca[centre], axis=-1), kind="stable")[:40])
        np.testing.assert_array_equal(off[i]["frames"].numpy(), all_frames[start : start + 4, near])
        np.testing.assert_array_equal(base[i]["init_frames"].numpy(), input_frames)
        it = ds[i]
        matches = np.flatnonzero((all_frames == it["init_frames"].numpy()[None]).all(axis=(1, 2)))
        assert len(matches) == 1, i
        j = int(matches[0])
        np.testing.assert_array_equal(it["init_torsions"].numpy(), all_torsions[j])
        window = [
            k for k in range(len(all_frames)) if (all_frames[k] == it["frames"][0].numpy()).all()
        ]
        assert window and not window[0] <= j < window[0] + 4, (j, window)
    with pytest.raises(StarmdInputError, match="probability"):
        WindowSpec(input_from_trajectory=1.5)
    with pytest.raises(StarmdInputError, match="crop_mode"):
        WindowSpec(crop_mode="random")


def test_too_short_for_any_window_is_a_clear_error(dataset):
    out, _ = dataset
    with pytest.raises(StarmdInputError, match="long enough"):
        TrajectoryWindowDataset(out, "train", WindowSpec(window=60, dt_ps=(100.0,)))


def test_splits_are_by_protein(tmp_path):
    assert hash_split("16pk_A") == hash_split("16pk_A")
    counts = {s: 0 for s in ("train", "val", "test")}
    for i in range(1000):
        counts[hash_split(f"p{i}")] += 1
    assert 750 < counts["train"] < 850 and 70 < counts["val"] < 130
    (tmp_path / "atlas_test.csv").write_text("name\n1am7\n")
    (tmp_path / "both.csv").write_text("name,split\nx,val\n")
    assert read_split_files([tmp_path / "atlas_test.csv", tmp_path / "both.csv"]) == {
        "1am7": "test",
        "x": "val",
    }


def test_prepare_refuses_to_overwrite_and_unwritable_output(dataset, atlas_dir, tmp_path):
    out, _ = dataset
    before = (out / "index.csv").read_text()
    with pytest.raises(StarmdInputError, match="exists; pass --overwrite"):
        prepare(atlas_dir, out)
    assert (out / "index.csv").read_text() == before
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StarmdInputError, match="cannot write output"):
        prepare(atlas_dir, blocker / "sub")


def test_prepare_generic_layout_with_stride(tmp_path):
    generic = tmp_path / "md"
    generic.mkdir()
    shutil.copy(MD / "1am7.pdb", generic / "lyso.pdb")
    shutil.copy(MD / "1am7_prod_R1_fit.xtc", generic / "lyso_run.xtc")
    rows = prepare(generic, tmp_path / "d", stride=5)
    assert rows[0].frames == 11 and rows[0].dt_ps == pytest.approx(500.0)
    with open(tmp_path / "d" / "index.csv") as fh:
        assert next(csv.DictReader(fh))["frames"] == "11"
