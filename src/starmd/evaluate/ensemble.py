"""The ATLAS ensemble table of AlphaFlow / MDGen (docs/metrics.md, section B).

Reference = the MD replicas concatenated. Coordinates are Angstrom, superposed on the reference
structure by CA. Metrics that cost O(frames^2) or need SASA (pairwise RMSD, PCA W2, exposure)
use a random subset of at most ``ensemble_frames`` frames drawn with ``seed`` (defaults
:data:`ENSEMBLE_FRAMES` = 250, AlphaFlow's ensemble size, and seed 0; both set per run by
``starmd evaluate --ensemble-frames --seed``); the others use every finite frame and stream over
them.
"""

from __future__ import annotations

import mdtraj as md
import numpy as np
from scipy.spatial import cKDTree
from scipy.stats import spearmanr

from starmd.evaluate.divergence import assignment_w2, gaussian_w2_parts
from starmd.evaluate.geometry import fit_pca
from starmd.structure.superpose import chunks

ENSEMBLE_FRAMES = 250
CONTACT_CUTOFF_A = 8.0
WEAK_CONTACT_MAX = 0.9
TRANSIENT_CONTACT_MIN = 0.1
SASA_PROBE_NM = 0.28
# mdtraj's default and AlphaFlow's. One point of a carbon's probe sphere stands for ~0.0026 nm^2
# here; at 240 points it stood for ~0.0106 nm^2, half the 0.02 nm^2 "buried" threshold, and a
# rigid rotation moved villin's side-chain SASA by up to 0.13 nm^2 (0.04 at 960) and the exposure
# metrics of the corpus proteins by up to 0.2. Cost: ~40-60 ms per frame of a 330-450 atom
# protein on one core, 4-6x the 240-point cost.
SASA_SPHERE_POINTS = 960
BURIED_SASA_NM2 = 0.02
EXPOSED_FRACTION = 0.1
BACKBONE = frozenset({"N", "CA", "C", "O", "OXT"})


def finite_frames(frames: np.ndarray) -> np.ndarray:
    """The frames ``(T, N, 3)`` whose coordinates are all finite."""
    return frames[np.isfinite(frames).all(axis=(1, 2))]


def subsample(frames: np.ndarray, n: int, seed: int) -> np.ndarray:
    """At most ``n`` frames drawn without replacement with ``seed``, in time order."""
    if len(frames) <= n:
        return frames
    keep = np.sort(np.random.default_rng(seed).choice(len(frames), n, replace=False))
    return frames[keep]


def mean_pairwise_rmsd(frames: np.ndarray) -> float:
    """Mean RMSD (Angstrom) over all pairs of distinct frames, without re-superposition.

    Args:
        frames: ``(n, M, 3)`` Angstrom, already superposed on a common reference.
    """
    flat = frames.reshape(len(frames), -1).astype(np.float64)
    if len(flat) < 2:
        return np.nan
    sq = (flat**2).sum(axis=1)
    d2 = np.clip(sq[:, None] + sq[None, :] - 2 * flat @ flat.T, 0.0, None)
    i, j = np.triu_indices(len(flat), k=1)
    return float(np.sqrt(d2[i, j] / frames.shape[1]).mean())


def atom_moments(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-atom mean ``(N, 3)`` and covariance ``(N, 3, 3)`` over finite frames (Angstrom)."""
    n_atoms = frames.shape[1]
    total = np.zeros((n_atoms, 3))
    outer = np.zeros((n_atoms, 3, 3))
    count = 0
    for block in chunks(len(frames)):
        x = finite_frames(frames[block]).astype(np.float64)
        total += x.sum(axis=0)
        outer += np.einsum("tni,tnj->nij", x, x)
        count += len(x)
    mean = total / count
    cov = outer / count - np.einsum("ni,nj->nij", mean, mean)
    return mean, cov


def rmwd(reference: np.ndarray, generated: np.ndarray) -> dict[str, float]:
    """Root-mean Wasserstein distance between per-atom Gaussian fits (AlphaFlow's RMWD).

    Per atom, ``W2^2 = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)``; the table
    reports ``sqrt(mean over atoms of W2^2)`` and its two parts computed the same way
    (``rmwd_translation`` from the mean term, ``rmwd_variance`` from the trace term), so
    ``rmwd^2 = translation^2 + variance^2``. Angstrom.
    """
    mu1, s1 = atom_moments(reference)
    mu2, s2 = atom_moments(generated)
    translation, variance = (part.mean() for part in gaussian_w2_parts(mu1, s1, mu2, s2))
    return {
        "rmwd": float(np.sqrt(translation + variance)),
        "rmwd_translation": float(np.sqrt(translation)),
        "rmwd_variance": float(np.sqrt(variance)),
    }


def pca_w2(
    reference_ca: np.ndarray, generated_ca: np.ndarray, joint: bool, *, frames: int, seed: int
) -> float:
    """2-Wasserstein distance between MD and generated CA ensembles on 2 principal components.

    Equal-size subsets (``min(frames, n_md, n_gen)`` frames drawn with ``seed``; no default, so
    that a caller cannot silently drop the run's settings) are projected on PC1-PC2 of
    the MD PCA (``joint=False``) or of a PCA of both subsets together (``joint=True``); the
    exact W2 between the point sets comes from a linear assignment, divided by
    ``sqrt(n_CA)`` so that it reads as a per-atom RMSD (Angstrom).
    """
    n = min(frames, len(reference_ca), len(generated_ca))
    if n < 2:
        return np.nan
    ref = subsample(reference_ca, n, seed)
    gen = subsample(generated_ca, n, seed)
    basis = fit_pca(np.concatenate([ref, gen]) if joint else ref, 2)
    return assignment_w2(basis.project(ref), basis.project(gen)) / np.sqrt(ref.shape[1])


def pc_cosine(reference_ca: np.ndarray, generated_ca: np.ndarray) -> float:
    """|cos| of the angle between the first principal components of MD and generated CA sets."""
    ref = fit_pca(reference_ca, 1).components[0]
    gen = fit_pca(generated_ca, 1).components[0]
    return float(abs(ref @ gen))


def contact_frequencies(frames_ca: np.ndarray, cutoff: float = CONTACT_CUTOFF_A) -> np.ndarray:
    """Fraction of finite frames in which each CA pair is closer than ``cutoff`` Angstrom.

    KD-tree neighbour search per frame, counts accumulated in an ``(R, R)`` matrix (upper
    triangle filled), never an all-pairs distance array over frames.
    """
    n = frames_ca.shape[1]
    counts = np.zeros(n * n, dtype=np.int64)
    used = 0
    for x in frames_ca:
        if not np.isfinite(x).all():
            continue
        # query_pairs keeps pairs at distance <= r; the definition is strictly closer
        pairs = cKDTree(x).query_pairs(np.nextafter(cutoff, 0.0), output_type="ndarray")
        if len(pairs):
            counts[pairs[:, 0] * n + pairs[:, 1]] += 1  # query_pairs returns each pair once
        used += 1
    return counts.reshape(n, n) / max(used, 1)


def contact_sets(initial_ca: np.ndarray, frequencies: np.ndarray) -> tuple[set, set]:
    """(weak, transient) CA contact sets.

    Weak: contacts (< 8 A) of the initial structure present in < 90% of frames. Transient:
    non-contacts of the initial structure present in > 10% of frames. Pairs ``i < j``.
    """
    n = len(initial_ca)
    d = np.linalg.norm(initial_ca[:, None] - initial_ca[None], axis=2)
    i, j = np.triu_indices(n, k=1)
    initial = d[i, j] < CONTACT_CUTOFF_A
    freq = frequencies[i, j]
    weak = {
        (a, b) for a, b, keep in zip(i, j, initial & (freq < WEAK_CONTACT_MAX), strict=True) if keep
    }
    transient = {
        (a, b)
        for a, b, keep in zip(i, j, ~initial & (freq > TRANSIENT_CONTACT_MIN), strict=True)
        if keep
    }
    return weak, transient


def jaccard(a: set, b: set) -> float:
    """|a & b| / |a | b|; NaN when both are empty.

    AlphaFlow's convention (0/0): a protein where neither ensemble has a weak contact, a
    transient contact or an exposed residue says nothing about agreement, so it is left out of
    the median instead of counting as a perfect 1; the report counts the proteins left out.
    """
    union = a | b
    return len(a & b) / len(union) if union else np.nan


def sidechain_residues(topology: md.Topology) -> list[list[int]]:
    """Per residue, the indices of its side-chain heavy atoms (empty for GLY / backbone-only)."""
    return [[a.index for a in r.atoms if a.name not in BACKBONE] for r in topology.residues]


def sidechain_sasa(frames: np.ndarray, topology: md.Topology) -> np.ndarray:
    """Side-chain SASA per residue (nm^2), Shrake-Rupley with a 0.28 nm probe, 960 points.

    Args:
        frames: ``(T, N, 3)`` Angstrom (finite).

    Returns:
        ``(T, R)`` nm^2 (0 for residues without side-chain atoms).
    """
    traj = md.Trajectory(frames.astype(np.float32) / 10.0, topology)
    atom_sasa = md.shrake_rupley(
        traj, probe_radius=SASA_PROBE_NM, n_sphere_points=SASA_SPHERE_POINTS, mode="atom"
    )
    groups = sidechain_residues(topology)
    out = np.zeros((len(frames), len(groups)))
    for r, atoms in enumerate(groups):
        if atoms:
            out[:, r] = atom_sasa[:, atoms].sum(axis=1)
    return out


def exposure_mutual_information(exposed: np.ndarray) -> np.ndarray:
    """Mutual information (nats) between binary exposure indicators of residue pairs.

    Args:
        exposed: ``(T, R)`` bool.

    Returns:
        ``(R, R)`` MI matrix.
    """
    e = exposed.astype(np.float64)
    t = len(e)
    p1 = e.mean(axis=0)
    p11 = e.T @ e / t
    joint = {
        (1, 1): p11,
        (1, 0): p1[:, None] - p11,
        (0, 1): p1[None, :] - p11,
        (0, 0): 1 - p1[:, None] - p1[None, :] + p11,
    }
    marginal = {1: p1, 0: 1 - p1}
    mi = np.zeros_like(p11)
    for (a, b), pab in joint.items():
        denominator = marginal[a][:, None] * marginal[b][None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            term = np.where(pab > 1e-12, pab * np.log(pab / denominator), 0.0)
        mi += term
    return mi


def exposure_metrics(
    initial_sasa: np.ndarray,
    reference_sasa: np.ndarray,
    generated_sasa: np.ndarray,
    residues: np.ndarray,
) -> dict[str, float]:
    """Exposed-residue Jaccard and exposure-MI Spearman correlation.

    A residue (with side-chain atoms) is *buried* when its side-chain SASA in the initial
    structure is < 0.02 nm^2, *exposed in a frame* when the SASA is above that. The set of
    buried residues exposed in > 10% of frames is compared by Jaccard (NaN when both sets are
    empty; set sizes in ``exposed_n_md`` / ``exposed_n``); the Spearman rho of the
    upper-triangle entries of the residue-pair MI matrices of exposure indicators (residues
    with side chains) is the exposure-MI correlation.

    Args:
        initial_sasa: ``(R,)`` nm^2.
        reference_sasa, generated_sasa: ``(T, R)`` nm^2.
        residues: indices of the residues with side-chain atoms.
    """
    buried = initial_sasa[residues] < BURIED_SASA_NM2
    ref_exposed = reference_sasa[:, residues] > BURIED_SASA_NM2
    gen_exposed = generated_sasa[:, residues] > BURIED_SASA_NM2
    ref_set = set(np.flatnonzero(buried & (ref_exposed.mean(axis=0) > EXPOSED_FRACTION)))
    gen_set = set(np.flatnonzero(buried & (gen_exposed.mean(axis=0) > EXPOSED_FRACTION)))
    i, j = np.triu_indices(len(residues), k=1)
    mi_ref = exposure_mutual_information(ref_exposed)[i, j]
    mi_gen = exposure_mutual_information(gen_exposed)[i, j]
    if np.ptp(mi_ref) == 0 or np.ptp(mi_gen) == 0:
        rho = np.nan
    else:
        rho = float(spearmanr(mi_ref, mi_gen).statistic)
    return {
        "exposed_jaccard": jaccard(ref_set, gen_set),
        "exposed_n_md": len(ref_set),
        "exposed_n": len(gen_set),
        "exposure_mi_spearman": rho,
    }
