"""Per-replica random streams: a replica's draws do not depend on the batch it is drawn in."""

import pytest
import torch

from starmd.diffusion import rng
from starmd.diffusion.rng import ReplicaGenerators


def test_each_replica_draws_from_its_own_stream():
    three = ReplicaGenerators.seeded(5, stream=0, frame=2, replicas=3, device="cpu")
    one = ReplicaGenerators.seeded(5, stream=0, frame=2, replicas=1, device="cpu")
    batch = rng.normal((3, 4, 3), three, torch.float64)
    alone = rng.normal((1, 4, 3), one, torch.float64)
    assert torch.equal(batch[:1], alone)
    assert not torch.equal(batch[0], batch[1])


def test_streams_frames_and_seeds_differ():
    def draw(seed, stream, frame):
        gens = ReplicaGenerators.seeded(seed, stream, frame, 1, "cpu")
        return rng.uniform((1, 8), gens)

    base = draw(0, 0, 0)
    for other in (draw(1, 0, 0), draw(0, 1, 0), draw(0, 0, 1), draw(-1, 0, 0)):
        assert not torch.equal(base, other)
    assert torch.equal(base, draw(0, 0, 0))


def test_a_plain_generator_draws_the_whole_batch():
    a = rng.normal((2, 3), torch.Generator().manual_seed(1))
    b = torch.randn((2, 3), generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_a_draw_without_the_replica_dimension_is_refused():
    gens = ReplicaGenerators.seeded(0, 0, 0, 2, "cpu")
    with pytest.raises(ValueError, match="replica dimension"):
        rng.normal((3, 4), gens)
