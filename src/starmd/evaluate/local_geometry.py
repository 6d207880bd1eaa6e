"""Local geometry of each method next to the reference MD's own (report section E).

Distributions of the backbone bond lengths (N-CA, CA-C, C(i)-N(i+1)), bond angles
(CA-C-N, C-N-CA), omega and consecutive CA-CA over every peptide bond of every finite frame;
heavy-atom clashes and Ramachandran outliers per frame; and the validity filter of BioEmu
(every consecutive CA-CA < 4.5 A, every C(i)-N(i+1) < 2.0 A, no two atoms of different residues
closer than 1.0 A) as the percentage of frames that pass. The measurements themselves live in
:mod:`starmd.structure.local_geometry` (torch); this module picks the atoms and summarises.

A generated folder whose sidecar records a rollout refinement (``starmd generate``'s default,
:mod:`starmd.sample.refine`) also gets that run's own per-frame checks of the frames before and
after refinement (:func:`refinement_rows`): the written trajectory holds only refined frames, so
the raw figures come from the sidecar, side by side with the refined ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import mdtraj as md
import numpy as np
import torch

from starmd.evaluate.validity import ValidityPlan
from starmd.structure.local_geometry import atom_contacts, backbone_geometry
from starmd.structure.superpose import chunks

LONG_PEPTIDE_A = 1.5
SHORT_PEPTIDE_A = 1.2
NON_TRANS_DEG = 150.0
BIOEMU_CA_CA_A = 4.5
BIOEMU_C_N_A = 2.0
BIOEMU_MIN_DISTANCE_A = 1.0
SAMPLE_VALUES = 20000  # per quantity, kept for the histograms
BOND_KEYS = ("n_ca", "ca_c")
JUNCTION_KEYS = ("c_n", "ca_c_n", "c_n_ca", "omega", "ca_ca")


@dataclass(frozen=True)
class GeometryPlan:
    """Atom indices the local-geometry measures need, derived once per topology.

    Attributes:
        backbone: ``(R', 3)`` indices of N, CA, C of the residues that have all three.
        junctions: ``(J,)`` indices into consecutive rows of ``backbone`` (row i and i+1) that
            are peptide-bonded (same chain, residue numbers i, i+1).
        residue_atoms: ``(R, A)`` atom indices per residue, padded with -1.
        chain, residue_number: ``(R,)``.
        radius, polar, disulfide: ``(N,)`` per atom, as the validity plan's.
    """

    backbone: np.ndarray
    junctions: np.ndarray
    residue_atoms: np.ndarray
    chain: np.ndarray
    residue_number: np.ndarray
    radius: np.ndarray
    polar: np.ndarray
    disulfide: np.ndarray


def plan_geometry(topology: md.Topology, validity: ValidityPlan) -> GeometryPlan:
    """Backbone triplets, peptide junctions and per-residue atom table of a heavy-atom topology."""
    by_name = {(a.residue.index, a.name): a.index for a in topology.atoms}
    rows, residues = [], []
    for r in topology.residues:
        keys = [(r.index, name) for name in ("N", "CA", "C")]
        if all(k in by_name for k in keys):
            rows.append([by_name[k] for k in keys])
            residues.append(r)
    junctions = [
        i
        for i in range(len(residues) - 1)
        if residues[i].chain.index == residues[i + 1].chain.index
        and residues[i + 1].resSeq - residues[i].resSeq == 1
    ]
    members = [[a.index for a in r.atoms] for r in topology.residues]
    table = np.full((len(members), max(map(len, members))), -1, dtype=int)
    for k, atoms in enumerate(members):
        table[k, : len(atoms)] = atoms
    return GeometryPlan(
        backbone=np.array(rows, dtype=int).reshape(-1, 3),
        junctions=np.array(junctions, dtype=int),
        residue_atoms=table,
        chain=validity.residue_chain,
        residue_number=validity.residue_number,
        radius=validity.atom_radius,
        polar=validity.atom_polar,
        disulfide=validity.atom_is_sg,
    )


def measure_geometry(frames: np.ndarray, plan: GeometryPlan) -> dict[str, np.ndarray]:
    """Backbone geometry and atom contacts of the finite frames.

    Args:
        frames: ``(T, N, 3)`` Angstrom.
        plan: from :func:`plan_geometry`.

    Returns:
        pooled values over frames and bonds: ``n_ca``, ``ca_c``, ``c_n``, ``ca_ca`` (Angstrom),
        ``ca_c_n``, ``c_n_ca``, ``omega`` (degrees); per finite frame: ``max_c_n``,
        ``max_ca_ca`` (0 without junctions), ``clash_pairs``, ``min_interresidue_a``.
    """
    finite = frames[np.isfinite(frames).all(axis=(1, 2))]
    keys = BOND_KEYS + JUNCTION_KEYS + ("max_c_n", "max_ca_ca", "clash_pairs", "min_interresidue_a")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    args = {
        "residue_atoms": torch.as_tensor(plan.residue_atoms),
        "chain": torch.as_tensor(plan.chain),
        "residue_number": torch.as_tensor(plan.residue_number),
        "radius": torch.as_tensor(plan.radius, dtype=torch.float32),
        "polar": torch.as_tensor(plan.polar),
        "disulfide": torch.as_tensor(plan.disulfide),
    }
    for block in chunks(len(finite), 256):
        # float32 as stored in XTC (1e-3 nm precision); float64 would double the cost
        x = torch.as_tensor(finite[block], dtype=torch.float32)
        n, ca, c = (x[:, plan.backbone[:, k]] for k in range(3))
        geometry = backbone_geometry(n, ca, c)
        for key in BOND_KEYS:
            parts[key].append(geometry[key].reshape(-1).numpy())
        for key in JUNCTION_KEYS:
            parts[key].append(geometry[key][:, plan.junctions].reshape(-1).numpy())
        for key, source in (("max_c_n", "c_n"), ("max_ca_ca", "ca_ca")):
            values = geometry[source][:, plan.junctions]
            parts[key].append(values.amax(dim=1).numpy() if values.shape[1] else np.zeros(len(x)))
        contacts = atom_contacts(x, **args)
        parts["clash_pairs"].append(contacts["clash_pairs"].numpy())
        parts["min_interresidue_a"].append(contacts["min_interresidue_a"].numpy())
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}


def _moments(values: np.ndarray) -> tuple[float, float]:
    return (float(values.mean()), float(values.std())) if len(values) else (np.nan, np.nan)


def geometry_summary(
    measures: dict[str, np.ndarray], rama_outlier_fraction: np.ndarray
) -> dict[str, float]:
    """The section's scalars.

    Args:
        measures: from :func:`measure_geometry`.
        rama_outlier_fraction: ``(T,)`` per frame, from the validity checks (finite frames).

    Returns:
        ``geo_{q}_mean`` / ``geo_{q}_sd`` for every bond length and angle and CA-CA (Angstrom,
        degrees), ``geo_c_n_long_pct`` (% of peptide bonds longer than 1.5 A),
        ``geo_omega_nontrans_pct`` (% with ``|omega| < 150`` degrees: cis or strained),
        ``geo_c_n_outside_pct`` (% outside 1.2-1.5 A),
        ``geo_rama_outlier_pct`` (mean % of residues per frame), ``geo_clash_pairs`` (mean
        clashing atom pairs per frame), ``geo_clash_frames_pct`` (% of frames with any),
        ``bioemu_valid_pct`` (% of frames passing BioEmu's filter).
    """
    out: dict[str, float] = {}
    for key in BOND_KEYS + ("c_n", "ca_c_n", "c_n_ca", "ca_ca"):
        out[f"geo_{key}_mean"], out[f"geo_{key}_sd"] = _moments(measures[key])
    frames = len(measures["clash_pairs"])
    if len(measures["c_n"]):
        c_n = measures["c_n"]
        out["geo_c_n_long_pct"] = 100.0 * float((c_n > LONG_PEPTIDE_A).mean())
        out["geo_c_n_outside_pct"] = 100.0 * float(
            ((c_n > LONG_PEPTIDE_A) | (c_n < SHORT_PEPTIDE_A)).mean()
        )
        out["geo_omega_nontrans_pct"] = 100.0 * float(
            (np.abs(measures["omega"]) < NON_TRANS_DEG).mean()
        )
    else:
        out["geo_c_n_long_pct"] = out["geo_omega_nontrans_pct"] = np.nan
        out["geo_c_n_outside_pct"] = np.nan
    if frames == 0:
        return out | {
            "geo_rama_outlier_pct": np.nan,
            "geo_clash_pairs": np.nan,
            "geo_clash_frames_pct": np.nan,
            "bioemu_valid_pct": np.nan,
        }
    passes = (
        (measures["max_ca_ca"] < BIOEMU_CA_CA_A)
        & (measures["max_c_n"] < BIOEMU_C_N_A)
        & (measures["min_interresidue_a"] >= BIOEMU_MIN_DISTANCE_A)
    )
    return out | {
        "geo_rama_outlier_pct": 100.0 * float(np.mean(rama_outlier_fraction)),
        "geo_clash_pairs": float(measures["clash_pairs"].mean()),
        "geo_clash_frames_pct": 100.0 * float((measures["clash_pairs"] > 0).mean()),
        "bioemu_valid_pct": 100.0 * float(passes.mean()),
    }


def geometry_samples(measures: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """At most :data:`SAMPLE_VALUES` values of each distribution (fixed seed), for the plot;
    keys ``geometry_{q}``."""
    rng = np.random.default_rng(seed)
    out = {}
    for key in ("c_n", "ca_ca", "ca_c_n", "c_n_ca", "omega"):
        values = measures[key]
        if len(values) > SAMPLE_VALUES:
            values = values[rng.choice(len(values), SAMPLE_VALUES, replace=False)]
        out[f"geometry_{key}"] = values
    return out


REFINEMENT_CHECKS = {
    "ca_valid_pct": "ca_valid_pct",
    "ca_valid_no_clash_no_break_pct": "geometry_valid_pct",
    "aa_clash_pct": "clash_frames_pct",
    "peptide_outside_pct": "peptide_outside_pct",
    "rama_outlier_pct": "rama_outlier_pct",
}
"""Sidecar check (:class:`starmd.sample.refine.RefinementLedger`) -> row key suffix."""


def refinement_rows(sidecar: Path | None) -> dict[str, float]:
    """The generation-time checks of a refined rollout, from its sidecar: ``gen_raw_{key}``,
    ``gen_refined_{key}`` and ``gen_written_{key}`` (after the atom polish) for each
    :data:`REFINEMENT_CHECKS` key (percentages pooled over the replicas, weighted by their
    frames), ``gen_refine_ms_per_frame`` and ``gen_polish_ms_per_frame``. Empty when the sidecar
    is missing, unreadable or records no refinement."""
    try:
        record = json.loads(sidecar.read_text()).get("refinement") if sidecar else None
    except (OSError, ValueError, AttributeError):
        return {}
    if not isinstance(record, dict) or not record.get("replicas"):
        return {}
    replicas = record["replicas"]
    frames = np.array([r["frames"] for r in replicas], dtype=float)
    if frames.sum() == 0:
        return {}
    out = {
        "gen_refine_ms_per_frame": float(record.get("ms_per_frame") or np.nan),
        "gen_polish_ms_per_frame": float(record.get("polish_ms_per_frame") or np.nan),
    }
    for tag in ("raw", "refined", "written"):
        for check, key in REFINEMENT_CHECKS.items():
            # sidecars written before a check (or the polish) existed lack it: not a number
            values = np.array(
                [(r.get(tag) or {}).get(check, np.nan) for r in replicas], dtype=float
            )
            out[f"gen_{tag}_{key}"] = float((values * frames).sum() / frames.sum())
    return out
