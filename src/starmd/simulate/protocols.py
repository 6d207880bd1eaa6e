"""MD protocols: force field, solvent model, integrator settings.

A :class:`Protocol` is plain data (it is written verbatim into every run's ``{name}.json``), and
:func:`build_system` turns it plus an OpenMM topology into an ``openmm.System``.

Measured on this machine (CPU platform, 1 thread, 4 fs, HBonds, hydrogen mass 3 amu; see
``benchmarks/md_speed.py`` and ``corpus/README.md``): Amber's GBSA-OBC2 as OpenMM's native
``GBSAOBCForce`` (``amber99_obc.xml``) ran about 6-9x faster than amber14's ``implicit/gbn2.xml``,
which OpenMM builds as a generic ``CustomGBForce``. A non-periodic cutoff bought little for the
40-60 residue proteins of the corpus (engrailed homeodomain, 830 atoms: 21.7 ns/day without,
20.3 with 2.0 nm, 24.7 with 1.2 nm) while shifting the potential energy by 1,700-3,000 kJ/mol
(GB energies are long-ranged), so ``implicit`` uses no cutoff: amber99sb-ildn + OBC2.
``implicit-gbn2`` (ff14SB + GBn2, the better-validated but slower pairing) and ``explicit``
(amber14 + TIP3P, PME, NPT) remain options.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from starmd.errors import StarmdInputError

TEMPERATURE_K = 300.0
"""Simulation temperature, Kelvin (ATLAS uses 300 K)."""


@dataclass(frozen=True)
class Protocol:
    """Settings of one MD protocol.

    Attributes:
        name: protocol key (``implicit``, ``implicit-gbn2``, ``explicit``).
        force_field: OpenMM force-field XML files, in load order.
        solvent: ``implicit`` (GB model inside ``force_field``) or ``explicit`` (water box).
        nonbonded_cutoff_nm: cutoff in nm; ``None`` means no cutoff (implicit only).
        step_fs: integration time step, femtoseconds.
        hydrogen_mass_amu: hydrogen mass after repartitioning, amu.
        friction_per_ps: Langevin friction coefficient, 1/ps.
        temperature_k: thermostat temperature, Kelvin.
        pressure_bar: barostat pressure, bar (explicit only).
        padding_nm: minimum water padding around the protein, nm (explicit only).
        ionic_strength_molar: NaCl concentration, mol/L (explicit only).
        water_model: water model name for ``Modeller.addSolvent`` (explicit only).
    """

    name: str
    force_field: tuple[str, ...]
    solvent: str
    nonbonded_cutoff_nm: float | None
    step_fs: float = 4.0
    hydrogen_mass_amu: float = 3.0
    friction_per_ps: float = 1.0
    temperature_k: float = TEMPERATURE_K
    pressure_bar: float | None = None
    padding_nm: float | None = None
    ionic_strength_molar: float | None = None
    water_model: str | None = None
    notes: str = field(default="", compare=False)

    @property
    def step_ps(self) -> float:
        """Time step in picoseconds."""
        return self.step_fs / 1000.0

    def to_json(self) -> dict[str, Any]:
        """The protocol as a JSON-serialisable dict."""
        data = asdict(self)
        data["force_field"] = list(self.force_field)
        return data


PROTOCOLS: dict[str, Protocol] = {
    "implicit": Protocol(
        name="implicit",
        force_field=("amber99sbildn.xml", "amber99_obc.xml"),
        solvent="implicit",
        nonbonded_cutoff_nm=None,
        notes="amber99sb-ildn + GBSA-OBC2 (native GBSAOBCForce), no cutoff",
    ),
    "implicit-gbn2": Protocol(
        name="implicit-gbn2",
        force_field=("amber14-all.xml", "implicit/gbn2.xml"),
        solvent="implicit",
        nonbonded_cutoff_nm=None,
        notes="amber14 (ff14SB) + GBn2 (CustomGBForce), no cutoff; about 6-9x slower on CPU",
    ),
    "explicit": Protocol(
        name="explicit",
        force_field=("amber14-all.xml", "amber14/tip3p.xml"),
        solvent="explicit",
        nonbonded_cutoff_nm=1.0,
        pressure_bar=1.0,
        padding_nm=1.0,
        ionic_strength_molar=0.15,
        water_model="tip3p",
        notes="ATLAS-like: amber14 + TIP3P, 0.15 M NaCl, PME, NPT 1 bar; meant for GPUs",
    ),
}


def get_protocol(name: str) -> Protocol:
    """Look up a protocol by name; raises :class:`StarmdInputError` for an unknown name."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        known = ", ".join(PROTOCOLS)
        raise StarmdInputError(f"--protocol {name}: unknown protocol (known: {known})") from None


def build_system(
    protocol: Protocol, topology: Any, positions: Any, rigid_hydrogens: bool = True
) -> tuple[Any, Any, Any]:
    """Build the OpenMM system for ``protocol``, solvating first if the protocol is explicit.

    Args:
        protocol: the MD protocol.
        topology: ``openmm.app.Topology`` of the protonated protein.
        positions: positions matching ``topology`` (OpenMM quantity, nm).
        rigid_hydrogens: constrain bonds to hydrogen (for MD); False keeps them as harmonic
            bonds (energy minimization, where constraints cost many extra iterations).

    Returns:
        ``(system, topology, positions)``; topology and positions include water and ions for
        the explicit protocol and are the inputs unchanged otherwise.
    """
    import openmm
    import openmm.app as app
    import openmm.unit as unit

    force_field = app.ForceField(*protocol.force_field)
    kwargs: dict[str, Any] = {"constraints": app.HBonds if rigid_hydrogens else None}
    if rigid_hydrogens:
        kwargs["hydrogenMass"] = protocol.hydrogen_mass_amu * unit.amu
    if protocol.solvent == "explicit":
        modeller = app.Modeller(topology, positions)
        modeller.addSolvent(
            force_field,
            model=protocol.water_model,
            padding=protocol.padding_nm * unit.nanometer,
            ionicStrength=protocol.ionic_strength_molar * unit.molar,
        )
        topology, positions = modeller.topology, modeller.positions
        kwargs["nonbondedMethod"] = app.PME
        kwargs["nonbondedCutoff"] = protocol.nonbonded_cutoff_nm * unit.nanometer
        kwargs["rigidWater"] = True
    elif protocol.nonbonded_cutoff_nm is not None:
        kwargs["nonbondedMethod"] = app.CutoffNonPeriodic
        kwargs["nonbondedCutoff"] = protocol.nonbonded_cutoff_nm * unit.nanometer
    system = force_field.createSystem(topology, **kwargs)
    if protocol.pressure_bar is not None:
        system.addForce(
            openmm.MonteCarloBarostat(
                protocol.pressure_bar * unit.bar, protocol.temperature_k * unit.kelvin
            )
        )
    return system, topology, positions


def make_integrator(protocol: Protocol, seed: int) -> Any:
    """A ``LangevinMiddleIntegrator`` at the protocol's temperature, friction and step.

    ``seed`` fixes the integrator's random stream (OpenMM treats 0 as "pick one", so a seed of
    0 is shifted to keep runs reproducible).
    """
    import openmm
    import openmm.unit as unit

    integrator = openmm.LangevinMiddleIntegrator(
        protocol.temperature_k * unit.kelvin,
        protocol.friction_per_ps / unit.picosecond,
        protocol.step_ps * unit.picosecond,
    )
    integrator.setRandomNumberSeed(openmm_seed(seed))
    return integrator


def openmm_seed(seed: int) -> int:
    """Map any int to a non-zero 31-bit OpenMM seed (0 would mean "random")."""
    return (seed % 2_147_483_646) + 1
