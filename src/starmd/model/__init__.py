"""The STAR-MD denoiser: causal diffusion transformer with joint spatio-temporal attention.

Public API:

* :class:`DenoiserConfig` (presets ``tiny`` / ``small`` / ``base``);
* inputs :class:`ProteinConditioning` (per protein) and :class:`FrameTokens` (per frame group);
  outputs :class:`DenoiserOutput` and :class:`WindowOutput`;
* :class:`StarDenoiser` with ``forward`` (training layout), ``append_clean`` and ``denoise``
  (rollout with a :class:`KVCache`);
* attention layouts :func:`training_group_mask`, :func:`training_attention_mask`,
  :func:`training_block_mask`.
"""

from starmd.model.config import DenoiserConfig
from starmd.model.denoiser import StarDenoiser, count_parameters
from starmd.model.inputs import DenoiserOutput, FrameTokens, ProteinConditioning, WindowOutput
from starmd.model.kv_cache import KVCache
from starmd.model.masks import training_attention_mask, training_block_mask, training_group_mask

__all__ = [
    "DenoiserConfig",
    "DenoiserOutput",
    "FrameTokens",
    "KVCache",
    "ProteinConditioning",
    "StarDenoiser",
    "WindowOutput",
    "count_parameters",
    "training_attention_mask",
    "training_block_mask",
    "training_group_mask",
]
