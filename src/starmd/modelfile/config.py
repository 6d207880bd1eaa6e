"""One typed training configuration, saved in every checkpoint, overridable from YAML and flags.

``TrainConfig.from_yaml(path, overrides=["optim.lr=3e-4", "model.preset=base"])`` reads a YAML
file whose keys mirror the dataclasses below (missing keys keep their defaults, unknown keys are
an error), then applies ``section.key=value`` overrides (values parsed as YAML scalars).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from starmd.diffusion.settings import DiffusionSection
from starmd.errors import StarmdInputError, located


@dataclass
class ModelSection:
    """Denoiser size: a preset of :class:`starmd.model.DenoiserConfig` plus field overrides."""

    preset: str = "small"
    overrides: dict[str, Any] = field(default_factory=dict)

    def denoiser(self, source: str = "config"):
        """The :class:`~starmd.model.config.DenoiserConfig` this section names; an unknown
        preset, field or invalid value is one :class:`StarmdInputError` naming ``source``."""
        from starmd.model.config import DenoiserConfig

        try:
            return DenoiserConfig.preset(self.preset, **self.overrides)
        except (TypeError, ValueError) as exc:
            raise StarmdInputError(located(source, f"model: {exc}")) from None


@dataclass
class DataSection:
    """Windows drawn from the prepared dataset (see :class:`starmd.data.dataset.WindowSpec`)."""

    window: int = 8
    min_window: int | None = None
    dt_ps: list[float] = field(default_factory=lambda: [10.0, 20.0, 50.0, 100.0])
    crop: int | None = 96
    crop_mode: str = "contiguous"
    input_from_trajectory: float = 0.0
    """Training windows only: probability of conditioning on a random frame of the replica
    instead of the input structure (validation windows always use the input structure)."""
    batch_size: int = 4
    samples_per_epoch: int = 512
    val_samples: int = 64
    num_workers: int = 0


@dataclass
class LossSection:
    """Loss weights (STAR-MD paper's as a starting point) and the low-noise cut-off."""

    rot: float = 0.5
    trans: float = 1.0
    trans_sigma_data_angstrom: float = 0.0
    """0 (default): the translation term weighs every noise level alike. s > 0: each residue's
    squared error is weighted by ``1 + (s / sigma)^2``, sigma the translation noise (A RMS per
    coordinate) of its frame, as EDM's weighting with ``s`` the spread of the target (Karras et
    al. 2022): near 1 at high noise, ~40 at the lowest (s = 1 A, tau_min 0.002), where errors
    are tenths of an Angstrom and otherwise count for nothing next to the high-noise terms."""
    torsion: float = 0.5
    backbone_fape: float = 0.5
    sidechain_fape: float = 0.5
    atom: float = 0.25
    distance: float = 0.25
    low_noise_tau: float = 0.25
    fape_clamp_angstrom: float = 10.0
    # Structural violations of the predicted heavy atoms at low noise (AlphaFold 2's
    # between-residue terms, starmd.train.losses.structural_violations); 0 = not computed.
    bond_violation: float = 0.0
    angle_violation: float = 0.0
    clash: float = 0.0
    violation_tolerance_sd: float = 12.0
    clash_tolerance_angstrom: float = 1.5


@dataclass
class OptimSection:
    lr: float = 5e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999


@dataclass
class TrainerSection:
    """Passed through to Lightning's ``Trainer``."""

    max_epochs: int | None = 20
    max_steps: int = -1
    max_time: str | None = None
    """Wall-clock limit, "DD:HH:MM:SS" (Lightning's format), e.g. "00:02:30:00"."""
    stop_step: int | None = None
    """Stop after this many optimizer steps without shortening the learning-rate schedule,
    which spans ``max_steps`` (or ``max_epochs``): one leg of a longer recipe, stopped where
    the recipe stopped it (``max_steps`` would compress the schedule into the leg). None: off."""
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    accelerator: str = "auto"
    seed: int = 0
    attention_window: int | None = None
    log_every_n_steps: int = 10
    limit_val_batches: int | float = 1.0  # Lightning: an int is a count, a float a fraction


@dataclass
class SamplingSection:
    """Generation defaults recommended for this model (``starmd generate`` uses them when
    ``--dt``/``--steps``/``--sampler`` are not given); chosen from measurements, see the card."""

    dt_ps: float | None = None
    """Default time step; None = the largest trained ``data.dt_ps``."""
    steps: int = 20
    sampler: str = "ddpm"
    step_scale: float = 1.0
    """Each residue's rigid move from the previous frame is scaled by this factor before
    refinement (``generate --step-scale``): a calibration of a network whose rollout steps are
    shorter than MD's, chosen on the validation proteins; 1 = the network's own steps."""


@dataclass
class DistillSection:
    """Few-step distillation (``starmd train`` with ``teacher`` set; docs/model_card.md).

    The student learns to map every point of the deterministic path from a prior draw to the
    teacher's sample (the teacher's ``teacher_steps``-step ``teacher_sampler`` run on the same
    draw, against the same clean context) onto that sample, so that one or two of its own
    deterministic (``ddim``) steps reproduce many of the teacher's.
    """

    teacher: str | None = None
    """Model file of the teacher; None = ordinary training."""
    teacher_steps: int = 5
    teacher_sampler: str = "dpm2"
    teacher_rho: float = 3.0
    one_step_fraction: float = 0.5
    """Fraction of training frames at ``tau = 1`` (the pure prior draw: the one-step case);
    the rest at ``tau ~ U[tau_min, 1]`` on the path towards the teacher's sample."""
    energy_score: float = 0.0
    """Weight of the energy-score term (0 = off): a second prior draw per window, the
    student's one-step C-alpha prediction from each draw, and ``d(X2, Y1) - d(X1, X2) / 2``
    (``d`` the C-alpha RMS distance in Angstrom, ``Y1`` the teacher's sample of the first
    draw). Its expectation is the energy distance between the student's and the teacher's
    one-step distributions up to a constant, least when they agree, so unlike the paired
    regression alone it does not reward collapsing onto the teacher's mean sample. Costs one
    more student pass per step."""
    torsion_energy_score: float = 0.0
    """Weight of the same rule on the one-step torsion angles (0 = off), with ``d`` the RMS
    chord distance between the angles' unit vectors over the residues' defined torsions (in
    [0, 2]). Shares the second pass with ``energy_score``."""
    dihedral_energy_score: float = 0.0
    """Weight of the same rule on the backbone dihedrals (psi, phi) across the peptide bonds of
    the one-step frames (0 = off), chord distance as for the torsions."""
    energy_score_target: str = "teacher"
    """What the energy-score terms score the student's one-step draws against: ``"teacher"``
    (the teacher's sample of the first draw, as above: the student learns the teacher's
    one-step distribution) or ``"data"`` (the window's own MD frame, a draw of the true
    next-frame distribution given the same clean context, independent of both student draws:
    the terms then pull the student's distribution towards MD's, past the teacher's, while
    the paired regression still follows the teacher)."""
    dihedral_regression: float = 0.0
    """Weight of a paired regression of the backbone dihedrals (0 = off): the mean over the
    peptide bonds of the scored frames of ``2 - 2 cos`` (the squared chord) between the psi and
    phi of the student's prediction and of the teacher's sample from the same draw, at every
    point of the path. The frame terms (rotation, backbone FAPE) weigh a residue's orientation
    on its own; this one weighs how neighbouring residues turn against each other, where the
    students' one step from MD's history spreads half as wide again as the teacher's
    (``benchmarks/step_spread.py``)."""
    own_rollout: float = 0.0
    """Fraction of the windows (0 = none) whose frames after the first are replaced, before the
    teacher samples its targets, by the student's own rollout from the window's first frame:
    one frame at a time, each drawn with the student's sampling defaults (``sampling``) against
    the frames already drawn, without gradients and without the rollout's refinement. The
    teacher then samples every frame from the student's history, and the student learns to
    follow the teacher where its own rollout takes it, not only from MD's history (training on
    the model's own outputs against exposure bias, as in scheduled sampling, Bengio et al.
    2015, and self-forcing of autoregressive video diffusion, Huang et al. 2025). Costs one
    more student pass per window frame, without gradients."""


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    diffusion: DiffusionSection = field(default_factory=DiffusionSection)
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimSection = field(default_factory=OptimSection)
    trainer: TrainerSection = field(default_factory=TrainerSection)
    sampling: SamplingSection = field(default_factory=SamplingSection)
    distill: DistillSection = field(default_factory=DistillSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def denoiser(self, source: str = "config"):
        """The network's :class:`~starmd.model.config.DenoiserConfig`: the model section, with
        the torsion diffusion's noise range from the diffusion section (the torsion skip
        needs it; it is never a model override)."""
        taken = {"torsion_sigma_min", "torsion_sigma_max"} & set(self.model.overrides)
        if taken:
            raise StarmdInputError(
                located(
                    source,
                    f"model: {', '.join(sorted(taken))} comes from the diffusion section "
                    "(diffusion.torsion_sigma_min / _max), not a model override",
                )
            )
        config = self.model.denoiser(source)
        try:
            return dataclasses.replace(
                config,
                torsion_sigma_min=self.diffusion.torsion_sigma_min,
                torsion_sigma_max=self.diffusion.torsion_sigma_max,
            )
        except ValueError as exc:
            raise StarmdInputError(located(source, f"diffusion: {exc}")) from None

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrainConfig:
        config = cls()
        for section_name, values in (data or {}).items():
            if section_name not in {f.name for f in dataclasses.fields(cls)}:
                raise StarmdInputError(located(source, f"unknown config section {section_name!r}"))
            section = getattr(config, section_name)
            if not isinstance(values, dict):
                raise StarmdInputError(located(source, f"section {section_name!r} must be a map"))
            for key, value in values.items():
                _set(section, section_name, key, value, source)
        return config

    @classmethod
    def from_yaml(cls, path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
        data: dict[str, Any] = {}
        if path is not None:
            path = Path(path)
            if not path.exists():
                raise StarmdInputError(located(path, "config file not found"))
            try:
                data = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as exc:
                raise StarmdInputError(located(path, f"invalid YAML ({exc})")) from exc
        config = cls.from_dict(data, str(path or "config"))
        for item in overrides or []:
            config.apply_override(item)
        config.denoiser(str(path or "config"))  # a bad model section fails here, at once
        d = config.diffusion
        for name, value, ok, need in (
            ("diffusion.train_tau_rho", d.train_tau_rho, d.train_tau_rho > 0, "> 0"),
            (
                "diffusion.reference_contact_deadband",
                d.reference_contact_deadband,
                d.reference_contact_deadband >= 0,
                ">= 0",
            ),
            (
                "trainer.stop_step",
                config.trainer.stop_step,
                config.trainer.stop_step is None or config.trainer.stop_step >= 1,
                ">= 1 (or null: off)",
            ),
            (
                "loss.trans_sigma_data_angstrom",
                config.loss.trans_sigma_data_angstrom,
                config.loss.trans_sigma_data_angstrom >= 0,
                ">= 0 (0: off)",
            ),
        ):
            if not ok:
                raise StarmdInputError(
                    located(str(path or "config"), f"{name} must be {need}, got {value}")
                )
        return config

    def apply_override(self, item: str) -> None:
        """Apply ``section.key=value`` (``model.overrides.c_s=64`` reaches model overrides)."""
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise StarmdInputError(f"override {item!r}: expected section.key=value")
        dotted, raw = item.split("=", 1)
        value = yaml.safe_load(raw)
        parts = dotted.split(".")
        if parts[0] not in {f.name for f in dataclasses.fields(self)}:
            raise StarmdInputError(f"override {item!r}: unknown section {parts[0]!r}")
        section = getattr(self, parts[0])
        if parts[0] == "model" and len(parts) == 3 and parts[1] == "overrides":
            section.overrides[parts[2]] = value
            return
        if len(parts) != 2:
            raise StarmdInputError(f"override {item!r}: expected section.key=value")
        _set(section, parts[0], parts[1], value, "override")


def _set(section: Any, section_name: str, key: str, value: Any, source: str) -> None:
    annotations = {f.name: str(f.type) for f in dataclasses.fields(section)}
    if key not in annotations:
        raise StarmdInputError(
            located(source, f"unknown key {section_name}.{key} (known: {sorted(annotations)})")
        )
    setattr(section, key, _coerce(value, annotations[key], f"{section_name}.{key}", source))


def _coerce(value: Any, annotation: str, name: str, source: str) -> Any:
    """Numbers where the field holds a number: YAML reads ``3e-3`` as a string and ``1`` as an
    int; both become the float the field expects (an int stays an int where the field also
    takes ints), anything else non-numeric is an error."""
    kinds = [part.strip() for part in annotation.split("|")]
    if value is None and "None" in kinds:
        return None
    if "float" not in kinds and "int" not in kinds:
        return value

    def bad() -> StarmdInputError:
        return StarmdInputError(located(source, f"{name}: expected a number, got {value!r}"))

    if isinstance(value, bool) or value is None:
        raise bad()
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise bad() from None
    if "int" in kinds and (isinstance(value, int) or "float" not in kinds):
        if not number.is_integer():
            raise bad()
        return int(number)
    return number
