import numpy as np
import pytest
import torch

from starmd.structure.local_geometry import (
    CONTACT_SEARCH_A,
    atom_contacts,
    backbone_geometry,
)


def _two_residue_backbone(c_n: float = 2.0) -> dict[str, torch.Tensor]:
    """N, CA, C of two residues in the xy plane, built so that every quantity is known by hand:
    CA(0)-C(0) along -x, C(0)-N(1) along +y (length ``c_n``), N(1)-CA(1) along +x."""
    n = torch.tensor([[-2.0, 1.0, 0.0], [0.0, c_n, 0.0]], dtype=torch.float64)
    ca = torch.tensor([[-1.5, 0.0, 0.0], [1.0, c_n, 0.0]], dtype=torch.float64)
    c = torch.tensor([[0.0, 0.0, 0.0], [1.5, c_n + 1.0, 0.0]], dtype=torch.float64)
    return {"n": n, "ca": ca, "c": c}


def test_backbone_geometry_of_a_hand_built_peptide_with_a_stretched_bond():
    geometry = backbone_geometry(**_two_residue_backbone(c_n=2.0))
    assert torch.allclose(geometry["c_n"], torch.tensor([2.0], dtype=torch.float64))
    assert torch.allclose(geometry["ca_c_n"], torch.tensor([90.0], dtype=torch.float64))
    assert torch.allclose(geometry["c_n_ca"], torch.tensor([90.0], dtype=torch.float64))
    assert torch.allclose(geometry["omega"].abs(), torch.tensor([180.0], dtype=torch.float64))
    assert torch.allclose(
        geometry["ca_ca"], torch.tensor([np.hypot(2.5, 2.0)], dtype=torch.float64)
    )
    assert torch.allclose(
        geometry["ca_c"], torch.tensor([1.5, np.hypot(0.5, 1.0)], dtype=torch.float64)
    )
    assert torch.allclose(
        geometry["n_ca"], torch.tensor([np.hypot(0.5, 1.0), 1.0], dtype=torch.float64)
    )


def test_backbone_geometry_broadcasts_over_frames_and_has_gradients():
    atoms = _two_residue_backbone()
    frames = {k: v.expand(4, -1, -1).clone().requires_grad_(True) for k, v in atoms.items()}
    geometry = backbone_geometry(**frames)
    assert geometry["c_n"].shape == (4, 1) and geometry["n_ca"].shape == (4, 2)
    (geometry["c_n"] - 1.33).pow(2).sum().backward()
    assert frames["n"].grad.abs().sum() > 0


def _chain_of_atoms(positions):
    """One atom per residue, carbons, one chain, residues numbered 1..R."""
    r = len(positions)
    return {
        "positions": torch.tensor(positions, dtype=torch.float64)[None],
        "residue_atoms": torch.arange(r)[:, None],
        "chain": torch.zeros(r, dtype=torch.long),
        "residue_number": torch.arange(1, r + 1),
        "radius": torch.full((r,), 1.7, dtype=torch.float64),
        "polar": torch.zeros(r, dtype=torch.bool),
        "disulfide": torch.zeros(r, dtype=torch.bool),
    }


def test_atom_contacts_match_a_hand_computation():
    # residues 1 and 3 (two apart) at 2.5 A: overlap 1.7 + 1.7 - 2.5 = 0.9 > 0.4, one clash;
    # residues 1 and 2 (adjacent) at 0.9 A: no clash counted, but closer than BioEmu's 1.0 A
    contacts = atom_contacts(**_chain_of_atoms([[0, 0, 0], [0.9, 0, 0], [2.5, 0, 0], [30, 0, 0]]))
    assert contacts["clash_pairs"].tolist() == [1]
    assert contacts["max_overlap_a"].item() == pytest.approx(0.9)
    assert contacts["min_interresidue_a"].item() == pytest.approx(0.9)


def test_atom_contacts_with_nothing_close():
    contacts = atom_contacts(**_chain_of_atoms([[0, 0, 0], [10, 0, 0], [20, 0, 0]]))
    assert contacts["clash_pairs"].tolist() == [0]
    assert contacts["max_overlap_a"].item() == 0.0
    assert contacts["min_interresidue_a"].item() == CONTACT_SEARCH_A
