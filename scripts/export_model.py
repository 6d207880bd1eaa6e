"""Export a training checkpoint's EMA weights as a model file, with the generation defaults
chosen for it (the ``sampling`` section of its config, read by ``starmd generate``).

    python scripts/export_model.py runs/small/checkpoints/best.ckpt \
        src/starmd/assets/models/starmd-small.safetensors --dt-ps 50 --steps 5 --sampler dpm2 \
        --step-scale 1.5
"""

from __future__ import annotations

import argparse

from starmd.modelfile import load_model
from starmd.train.module import StarMDModule
from starmd.train.run import export_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a .ckpt (its EMA weights) or model.safetensors")
    parser.add_argument("out", help="model file to write (.safetensors)")
    parser.add_argument("--dt-ps", type=float, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--sampler", required=True)
    parser.add_argument(
        "--step-scale", type=float, default=1.0, help="recommended generate --step-scale"
    )
    args = parser.parse_args()
    loaded = load_model(args.checkpoint)
    config = loaded.config
    config.sampling.dt_ps = args.dt_ps
    config.sampling.steps = args.steps
    config.sampling.sampler = args.sampler
    config.sampling.step_scale = args.step_scale
    module = StarMDModule(config)
    module.ema.load_state_dict(loaded.model.state_dict())
    print(export_model(module, args.out))


if __name__ == "__main__":
    main()
