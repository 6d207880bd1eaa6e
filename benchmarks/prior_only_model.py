"""Write a copy of a model with its frame update switched off (the elastic prior alone) or scaled.

The denoiser predicts each clean frame as an update of its reference frame (the elastic-network
prior's base for that frame; ``Denoiser.reference_update``). Zeroing that head's last linear
layer makes every clean prediction the reference itself, while the learned torsions (and so the
side chains) stay. Scored next to the trained model this is the floor the learned frame motion
has to beat (issue "Dynamics fidelity", column (f)); it is a model file like any other, so
``starmd generate`` and ``starmd fidelity`` take it unchanged. ``--scale s`` multiplies the
head instead of zeroing it (0 < s < 1: the update's rotation vector part and translation shrink
by about s, a probe of whether the learned motion is right in direction but too large).

Usage::

    python benchmarks/prior_only_model.py starmd-small -o runs/prior/starmd-small-prior.safetensors
    starmd fidelity corpus/md -o runs/fidelity -m starmd-small \\
        -m prior=runs/prior/starmd-small-prior.safetensors --split val --seeds 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from starmd.errors import StarmdError
from starmd.modelfile import read_config, resolve_model
from starmd.structure.io import atomic_write

FRAME_UPDATE = ("reference_update.linear.weight", "reference_update.linear.bias")


def prior_only(source: Path, out: Path, scale: float = 0.0) -> list[str]:
    """Copy ``source`` to ``out`` with the frame-update head times ``scale`` (0: zeroed);
    returns the names of the scaled tensors."""
    read_config(source)  # one-line errors for a missing, corrupt or foreign file
    with safe_open(str(source), "pt") as fh:
        metadata = dict(fh.metadata() or {})
        tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    missing = [name for name in FRAME_UPDATE if name not in tensors]
    if missing:
        raise SystemExit(f"{source}: no frame-update head ({', '.join(missing)} missing)")
    for name in FRAME_UPDATE:
        tensors[name] = tensors[name] * scale
    meaning = "elastic prior alone" if scale == 0 else f"frame update scaled by {scale}"
    metadata["derived"] = json.dumps(
        {"from": source.name, "scaled": list(FRAME_UPDATE), "scale": scale, "meaning": meaning}
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    return list(FRAME_UPDATE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="bundled model name or .safetensors file")
    parser.add_argument("-o", "--out", type=Path, required=True, help="output .safetensors")
    parser.add_argument("--scale", type=float, default=0.0, help="factor on the head (0: off)")
    args = parser.parse_args()
    try:
        scaled = prior_only(resolve_model(args.model), args.out, args.scale)
    except (StarmdError, OSError) as exc:
        sys.exit(f"error: {exc}")
    print(f"wrote {args.out} ({', '.join(scaled)} x {args.scale})")


if __name__ == "__main__":
    main()
