"""What a model knows: checks of a generation request against the model's training domain.

A model file records what it was trained on (``data.dt_ps``: the physical time steps of its
training windows; ``data.crop``: the longest residue crop). A request outside that domain still
runs -- the model may generalize -- but the user is told so before the run, and the sidecar
keeps the warnings. Time steps that no model of this kind can sensibly take (below
:data:`MIN_DT_PS`, or above :data:`MAX_DT_FACTOR` times the longest trained step) are refused
unless forced.
"""

from __future__ import annotations

from starmd.errors import StarmdInputError
from starmd.modelfile.config import TrainConfig
from starmd.structure.protein import Protein

MIN_DT_PS = 1.0
"""Below a picosecond a frame-to-frame step is bond vibration, not conformational dynamics."""
MAX_DT_FACTOR = 100.0


def check_domain(
    protein: Protein, dt_ps: float, config: TrainConfig, force: bool = False
) -> list[str]:
    """Warnings for a request outside the model's training domain (empty when inside).

    Raises :class:`StarmdInputError` for an absurd time step unless ``force``.
    """
    trained = sorted(float(dt) for dt in config.data.dt_ps)
    lowest, highest = trained[0], trained[-1]
    absurd = dt_ps < MIN_DT_PS or dt_ps > MAX_DT_FACTOR * highest
    if absurd and not force:
        raise StarmdInputError(
            f"--dt {dt_ps:g} ps is far outside what this model was trained on "
            f"({lowest:g}-{highest:g} ps); allowed without --force: {MIN_DT_PS:g} to "
            f"{MAX_DT_FACTOR * highest:g} ps"
        )
    warnings = []
    if not lowest <= dt_ps <= highest:
        warnings.append(
            f"--dt {dt_ps:g} ps is outside the time steps this model was trained on "
            f"({lowest:g}-{highest:g} ps): its dynamics at this step are untested"
        )
    crop = config.data.crop
    if crop is not None and protein.n_residues > crop:
        warnings.append(
            f"{protein.n_residues} residues: this model was trained on crops of at most {crop} "
            "residues; expect more flagged frames (see the health counts at the end)"
        )
    chains = len(set(protein.chain_ids))
    if chains > 1:
        warnings.append(
            f"{chains} chains: this model was trained on single-chain proteins; chain breaks "
            "are kept, but inter-chain motion is outside its training"
        )
    return warnings
