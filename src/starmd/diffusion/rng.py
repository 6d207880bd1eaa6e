"""Where the diffusion processes' random numbers come from: one generator, or one per replica.

Every random draw of the diffusers goes through :func:`normal` or :func:`uniform`. With a plain
``torch.Generator`` the whole batch is drawn from it at once. With :class:`ReplicaGenerators`
(what a rollout uses) the leading dimension of every draw is the replica, and replica ``r``'s
numbers come from its own generator alone, so a replica's trajectory does not depend on how many
replicas share the batch (``--replicas 1`` and ``--replicas 5`` give the same replica 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class ReplicaGenerators:
    """One ``torch.Generator`` per entry of the leading (replica) dimension of each draw."""

    generators: tuple[torch.Generator, ...]

    @classmethod
    def seeded(
        cls, seed: int, stream: int, frame: int, replicas: int, device: torch.device | str
    ) -> ReplicaGenerators:
        """Generators for ``replicas`` replicas, each seeded from ``(seed, stream, replica,
        frame)`` through numpy's ``SeedSequence`` (well-mixed, independent streams; a
        negative ``seed`` is taken modulo 2^64)."""
        generators = []
        for replica in range(replicas):
            entropy = [seed % 2**64, stream, replica, frame]
            state = np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]
            generator = torch.Generator(device=device)
            generator.manual_seed(int(state) & (2**63 - 1))
            generators.append(generator)
        return cls(tuple(generators))


RandomSource = torch.Generator | ReplicaGenerators
"""What every diffuser's ``generator`` argument accepts."""


def normal(
    shape: Sequence[int],
    generator: RandomSource,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Standard normal draws of ``shape``."""
    return _draw(torch.randn, tuple(shape), generator, dtype, device)


def uniform(
    shape: Sequence[int],
    generator: RandomSource,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Uniform draws on ``[0, 1)`` of ``shape``."""
    return _draw(torch.rand, tuple(shape), generator, dtype, device)


def _draw(sampler, shape: tuple[int, ...], generator, dtype, device) -> torch.Tensor:
    if isinstance(generator, torch.Generator):
        return sampler(shape, generator=generator, dtype=dtype, device=device)
    replicas = len(generator.generators)
    if not shape or shape[0] != replicas:
        raise ValueError(f"a draw of shape {shape} has no leading replica dimension of {replicas}")
    return torch.stack(
        [sampler(shape[1:], generator=g, dtype=dtype, device=device) for g in generator.generators]
    )
