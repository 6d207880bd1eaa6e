"""Key/value cache of the joint spatio-temporal attention for autoregressive rollout.

Per attention layer the cache holds the keys and values of clean frame groups only: the
augmented single-feature keys/values (rotary-encoded scalars plus the global-frame key/value
points of the invariant point term), ``O(groups x L x d)`` per layer. Pair features are never
cached. Storage is a ring buffer of ``slots``, each one group of ``L`` tokens:

* ``window=W``: the ``W`` most recent clean groups stay, plus group 0 when ``sink`` is set,
  plus one scratch slot for the group being processed, so memory is flat in trajectory length;
* ``window=None``: full history (the paper's mode); the buffer doubles when full.

Keys are order-free (positions live inside the rotary-encoded keys), so a slot can be reused
without moving the others. The model writes into the cache through :meth:`open_slot`,
:meth:`write` and :meth:`commit`; users only create, inspect and :meth:`reset` it.
"""

from __future__ import annotations

import torch


class KVCache:
    """Rollout cache of clean groups' attention keys/values.

    Args:
        window: number of most recent clean groups kept (``None``: all).
        sink: also keep group 0 (the initial structure) forever.
    """

    def __init__(self, window: int | None = None, sink: bool = False) -> None:
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1 or None, got {window}")
        self.window = window
        self.sink = sink
        self.reset()

    def reset(self) -> None:
        """Drop all groups and storage."""
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.slot_group: list[int] = []
        self.num_appended = 0
        self._residue_mask: torch.Tensor | None = None
        self._shape: tuple[int, ...] | None = None

    # inspection -----------------------------------------------------------------------------
    @property
    def groups(self) -> list[int]:
        """Indices (0 = first appended) of the clean groups held, ascending."""
        return sorted(g for g in self.slot_group if g >= 0)

    @property
    def num_slots(self) -> int:
        return len(self.slot_group)

    @property
    def num_residues(self) -> int:
        return 0 if self._shape is None else self._shape[1]

    def nbytes(self) -> int:
        """Bytes allocated for keys and values over all layers."""
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def nbytes_used(self) -> int:
        """Bytes of the groups held (excludes free and scratch slots)."""
        if not self.slot_group:
            return 0
        return self.nbytes() * len(self.groups) // self.num_slots

    # model-side API ---------------------------------------------------------------------------
    def _capacity(self) -> int:
        if self.window is None:
            return 8
        return self.window + int(self.sink) + 1

    def open_slot(
        self,
        residue_mask: torch.Tensor,
        num_layers: int,
        num_heads: int,
        key_dim: int,
        value_dim: int,
        dtype: torch.dtype,
    ) -> int:
        """Reserve a free slot for the group about to run; allocate storage on first use.

        Args:
            residue_mask: ``(B, L)`` bool; must stay the same for the whole rollout.
        """
        b, l = residue_mask.shape
        shape = (b, l, num_layers, num_heads, key_dim, value_dim)
        if self._shape is None:
            self._shape = shape
            self._residue_mask = residue_mask.clone()
            self._allocate(self._capacity(), dtype, residue_mask.device)
        elif shape != self._shape:
            raise ValueError(
                f"KVCache holds (B, L, layers, heads, dk, dv) = {self._shape}, got {shape}"
            )
        elif not torch.equal(residue_mask, self._residue_mask):
            raise ValueError("KVCache: residue_mask changed during the rollout")
        free = [i for i, g in enumerate(self.slot_group) if g < 0]
        if not free:
            self._allocate(2 * self.num_slots, self.keys[0].dtype, self.keys[0].device)
            free = [i for i, g in enumerate(self.slot_group) if g < 0]
        return free[0]

    def _allocate(self, num_slots: int, dtype: torch.dtype, device: torch.device) -> None:
        b, l, num_layers, h, dk, dv = self._shape
        old_keys, old_values, old = self.keys, self.values, self.num_slots
        self.keys = [
            torch.zeros(b, h, num_slots * l, dk, dtype=dtype, device=device)
            for _ in range(num_layers)
        ]
        self.values = [
            torch.zeros(b, h, num_slots * l, dv, dtype=dtype, device=device)
            for _ in range(num_layers)
        ]
        for new, prev in zip(self.keys + self.values, old_keys + old_values, strict=False):
            new[:, :, : old * l] = prev
        self.slot_group = self.slot_group + [-1] * (num_slots - old)

    def write(self, layer: int, slot: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Store one group's keys ``(B, H, L, dk)`` and values ``(B, H, L, dv)`` in ``slot``."""
        l = self.num_residues
        self.keys[layer][:, :, slot * l : (slot + 1) * l] = keys
        self.values[layer][:, :, slot * l : (slot + 1) * l] = values

    def visibility(self, slot: int) -> tuple[int, torch.Tensor | None]:
        """What a query group whose own keys sit in ``slot`` may see (the same for every layer).

        Returns the number ``S`` of leading slots covering the held groups and ``slot``, and a
        bool key mask ``(B, 1, 1, S L)`` (None when every key in those slots is visible).
        """
        used = [i for i, g in enumerate(self.slot_group) if g >= 0] + [slot]
        n = max(used) + 1
        if len(set(used)) == n and bool(self._residue_mask.all()):
            return n, None
        slot_visible = torch.zeros(n, dtype=torch.bool, device=self._residue_mask.device)
        slot_visible[used] = True
        key_mask = slot_visible[None, :, None] & self._residue_mask[:, None, :]  # (B, S, L)
        return n, key_mask.reshape(key_mask.shape[0], 1, 1, n * self.num_residues)

    def layer(self, layer: int, num_slots: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys ``(B, H, S L, dk)`` and values ``(B, H, S L, dv)`` of the first ``S`` slots."""
        n = num_slots * self.num_residues
        return self.keys[layer][:, :, :n], self.values[layer][:, :, :n]

    def commit(self, slot: int) -> None:
        """Mark ``slot`` as holding the next clean group and evict groups outside the window."""
        self.slot_group[slot] = self.num_appended
        self.num_appended += 1
        if self.window is None:
            return
        oldest_kept = self.num_appended - self.window
        for i, g in enumerate(self.slot_group):
            if g >= 0 and g < oldest_kept and not (self.sink and g == 0):
                self.slot_group[i] = -1
