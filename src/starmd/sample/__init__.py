"""Sampling: autoregressive rollout with a KV cache and the ``generate`` workflow."""
