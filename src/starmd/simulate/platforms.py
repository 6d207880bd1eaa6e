"""Choose the OpenMM compute platform: CUDA > OpenCL > CPU, verified by creating a context."""

from __future__ import annotations

from functools import cache
from typing import Any

from starmd.errors import StarmdInputError

PLATFORM_PREFERENCE = ("CUDA", "OpenCL", "CPU")
"""Order tried by ``platform="auto"``."""


def available_platforms() -> list[str]:
    """Names of the OpenMM platforms whose plugins loaded on this machine."""
    import openmm

    return [
        openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())
    ]


@cache
def _works(name: str) -> bool:
    """Whether a context can actually be created on platform ``name`` (a plugin may load
    without a usable device)."""
    import openmm

    try:
        platform = openmm.Platform.getPlatformByName(name)
        system = openmm.System()
        system.addParticle(1.0)
        openmm.Context(system, openmm.VerletIntegrator(0.001), platform)
    except Exception:
        return False
    return True


def select_platform(name: str = "auto", threads: int | None = None) -> tuple[Any, dict[str, str]]:
    """Resolve a platform request into an OpenMM ``Platform`` and its properties.

    Args:
        name: ``auto`` (first working of CUDA, OpenCL, CPU) or a platform name
            (``CUDA``, ``OpenCL``, ``CPU``, ``Reference``; case-insensitive).
        threads: CPU threads for the CPU platform (``None``: OpenMM's default, all cores).

    Returns:
        ``(platform, properties)``; GPU platforms run in mixed precision.

    Raises:
        StarmdInputError: the named platform is unknown or unusable on this machine.
    """
    import openmm

    loaded = available_platforms()
    if name.lower() == "auto":
        chosen = next((p for p in PLATFORM_PREFERENCE if p in loaded and _works(p)), None)
        if chosen is None:
            raise StarmdInputError("--platform auto: no usable OpenMM platform found")
    else:
        chosen = next((p for p in loaded if p.lower() == name.lower()), None)
        if chosen is None or not _works(chosen):
            usable = ", ".join(p for p in loaded if _works(p))
            raise StarmdInputError(
                f"--platform {name}: not available on this machine (usable: {usable}); "
                "use --platform auto"
            )
    properties: dict[str, str] = {}
    if chosen in ("CUDA", "OpenCL"):
        properties["Precision"] = "mixed"
    if chosen == "CPU" and threads is not None:
        properties["Threads"] = str(int(threads))
    return openmm.Platform.getPlatformByName(chosen), properties
