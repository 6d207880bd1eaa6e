"""Shared builders for the denoiser tests: random proteins, frames and parameters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
import torch

from starmd.model import DenoiserConfig, FrameTokens, ProteinConditioning, StarDenoiser
from starmd.structure.rigid import Rigid, quat_to_rotmat


def random_rigid(shape: tuple[int, ...], generator: torch.Generator, dtype, scale: float = 10.0):
    """Uniformly random rotations and Gaussian translations (Angstrom)."""
    rots = quat_to_rotmat(torch.randn(*shape, 4, generator=generator, dtype=dtype))
    return Rigid(rots, scale * torch.randn(*shape, 3, generator=generator, dtype=dtype))


def chain_frames(
    batch_shape: tuple[int, ...], length: int, generator: torch.Generator, dtype
) -> Rigid:
    """Protein-like frames ``(*batch_shape, L)``: a 3.8 A random walk with random orientations."""
    steps = torch.randn(*batch_shape, length, 3, generator=generator, dtype=dtype)
    steps = 3.8 * steps / steps.norm(dim=-1, keepdim=True)
    trans = steps.cumsum(-2)
    trans = trans - trans.mean(-2, keepdim=True)
    rots = quat_to_rotmat(torch.randn(*batch_shape, length, 4, generator=generator, dtype=dtype))
    return Rigid(rots, trans)


@dataclass
class Window:
    """One training window: protein conditioning and the clean/noisy copies of K frames."""

    cond: ProteinConditioning
    clean: FrameTokens
    noisy: FrameTokens

    def map_frames(self, fn: Callable[[Rigid], Rigid]) -> Window:
        """Apply ``fn`` to every input frame (tokens, references, initial structure)."""

        def tokens(t: FrameTokens) -> FrameTokens:
            reference = None if t.reference is None else fn(t.reference)
            return replace(t, frames=fn(t.frames), reference=reference)

        return Window(
            replace(self.cond, init_frames=fn(self.cond.init_frames)),
            tokens(self.clean),
            tokens(self.noisy),
        )


def make_window(
    batch: int = 2,
    length: int = 10,
    frames: int = 4,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    num_padding: int = 0,
    prior_single: int = 0,
    prior_pair: int = 0,
) -> Window:
    """Random inputs; the last ``num_padding`` residues of batch element 0 are padding.

    Batch element 1 (if any) has two chains (a residue-index jump of 100 at L // 2).
    """
    g = torch.Generator().manual_seed(seed)
    l = length
    aatype = torch.randint(0, 20, (batch, l), generator=g)
    residue_index = torch.arange(l).expand(batch, l).clone()
    chain_index = torch.zeros(batch, l, dtype=torch.long)
    if batch > 1:
        residue_index[1, l // 2 :] += 100
        chain_index[1, l // 2 :] = 1
    residue_mask = torch.ones(batch, l, dtype=torch.bool)
    if num_padding:
        residue_mask[0, l - num_padding :] = False
        aatype[0, l - num_padding :] = 20
    torsion_mask = torch.rand(batch, l, 7, generator=g) < 0.7
    cond = ProteinConditioning(
        aatype=aatype,
        residue_index=residue_index,
        chain_index=chain_index,
        residue_mask=residue_mask,
        init_frames=chain_frames((batch,), l, g, dtype),
        dt_ps=torch.tensor([100.0, 1000.0, 10.0, 1.0][:batch], dtype=dtype),
        torsion_mask=torsion_mask,
        prior_single=torch.randn(batch, l, prior_single, generator=g, dtype=dtype)
        if prior_single
        else None,
        prior_pair=torch.randn(batch, l, l, prior_pair, generator=g, dtype=dtype)
        if prior_pair
        else None,
    )
    time_ps = cond.dt_ps[:, None] * torch.arange(frames, dtype=dtype) + 5000.0
    clean = FrameTokens(
        frames=chain_frames((batch, frames), l, g, dtype),
        torsions=(torch.rand(batch, frames, l, 7, generator=g, dtype=dtype) * 2 - 1) * torch.pi,
        tau=0.1 * torch.rand(batch, frames, generator=g, dtype=dtype),
        time_ps=time_ps,
    )
    # as in training: noisy frame t is predicted relative to clean frame t-1 (frame 0: init)
    reference = Rigid.cat([cond.init_frames.unsqueeze(1), clean.frames[:, :-1]], dim=1)
    noisy = FrameTokens(
        frames=chain_frames((batch, frames), l, g, dtype),
        torsions=(torch.rand(batch, frames, l, 7, generator=g, dtype=dtype) * 2 - 1) * torch.pi,
        tau=torch.rand(batch, frames, generator=g, dtype=dtype),
        time_ps=time_ps,
        reference=reference,
    )
    return Window(cond, clean, noisy)


def randomize_parameters(model: torch.nn.Module, seed: int = 0, std: float = 0.1) -> None:
    """Perturb every parameter, so zero-initialized gates and updates do not hide anything."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(std * torch.randn(p.shape, generator=g, dtype=p.dtype))


def make_model(dtype: torch.dtype = torch.float64, seed: int = 0, **overrides) -> StarDenoiser:
    """A tiny denoiser with all parameters perturbed away from their (partly zero) init."""
    torch.manual_seed(seed)
    model = StarDenoiser(DenoiserConfig.tiny(**overrides)).to(dtype)
    randomize_parameters(model, seed)
    return model.eval()


@pytest.fixture(autouse=True)
def _single_thread():
    """Tests are timed on busy machines; keep torch on one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
