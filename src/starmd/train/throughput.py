"""Training throughput of the denoiser: frames and tokens per second of full training steps.

Forward + backward + optimizer step of the complete training objective on windows of the
bundled demo MD (the real data format), timed after two warm-up steps (median).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from importlib import resources
from pathlib import Path

import torch


def measure(preset: str, window: int, crop: int, batch: int, steps: int, device: str) -> dict:
    from starmd.data.dataset import TrajectoryWindowDataset, WindowSpec, collate_windows
    from starmd.data.prepare import prepare
    from starmd.model import count_parameters
    from starmd.modelfile.config import TrainConfig
    from starmd.train.module import StarMDModule, step_generator

    md = Path(str(resources.files("starmd") / "assets" / "demo" / "1am7"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        prepare(md, root, fractions=(1, 0, 0))
        spec = WindowSpec(window=window, dt_ps=(100.0,), crop=crop)
        data = TrajectoryWindowDataset(root, "train", spec, samples_per_epoch=batch)
        sample = collate_windows([data[i] for i in range(batch)])
    sample = {k: v.to(device) for k, v in sample.items()}
    module = StarMDModule(TrainConfig.from_yaml(None, [f"model.preset={preset}"])).to(device)
    optimizer = torch.optim.AdamW(module.model.parameters(), lr=1e-4)
    times = []
    for step in range(steps + 2):
        t0 = time.perf_counter()
        terms = module.compute_losses(sample, step_generator(0, step, 0, torch.device(device)))
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if step >= 2:
            times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    return {
        "preset": preset,
        "parameters": count_parameters(module.model),
        "window": window,
        "residues": crop,
        "batch": batch,
        "step_s": round(step_s, 3),
        "frames_per_s": round(batch * window / step_s, 2),
        "tokens_per_s": round(batch * window * crop / step_s, 1),
        "device": device,
        "threads": torch.get_num_threads(),
    }
