"""Sampling: autoregressive rollout with a KV cache, the ``generate`` workflow and its trajectory
writer; models are loaded through :mod:`starmd.modelfile`."""
