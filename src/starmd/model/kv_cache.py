"""Key/value cache of the joint spatio-temporal attention for autoregressive rollout.

Per attention layer the cache holds the keys and values of clean frame groups only: the
augmented single-feature keys/values (rotary-encoded scalars plus the global-frame key/value
points of the invariant point term), ``O(groups x L x d)`` per layer. Pair features are never
cached. Storage is a ring buffer of ``slots``, each one group of ``L`` tokens:

* ``window=W``: the ``W`` most recent clean groups stay, plus group 0 when ``sink`` is set,
  plus two scratch slots for the groups being processed (a clean group being appended and the
  noisy group of the next frame can share one pass), so memory is flat in trajectory length;
* ``window=None``: full history (the paper's mode); the buffer doubles when full.

Keys are order-free (positions live inside the rotary-encoded keys), so a slot can be reused
without moving the others. The model writes into the cache through :meth:`open_slot`,
:meth:`write_tokens` and :meth:`commit`; users only create, inspect and :meth:`reset` it.
"""

from __future__ import annotations

import torch


class KVCache:
    """Rollout cache of clean groups' attention keys/values.

    Args:
        window: number of most recent clean groups kept (``None``: all).
        sink: also keep group 0 (the initial structure) forever.
        static: every pass attends over all the slots of the storage, with an explicit key
            mask (free and stale slots masked), so that the attention's shapes and Python-side
            values do not change from one frame to the next once the ring buffer is allocated:
            what lets ``torch.compile`` serve every frame with one graph. The same result as the
            default (which attends over the leading slots that matter and skips the mask when
            nothing is masked) to float rounding.
    """

    def __init__(self, window: int | None = None, sink: bool = False, static: bool = False) -> None:
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1 or None, got {window}")
        self.window = window
        self.sink = sink
        self.static = static
        self.reset()

    def reset(self) -> None:
        """Drop all groups and storage."""
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.slot_group: list[int] = []
        self.num_appended = 0
        self._residue_mask: torch.Tensor | None = None
        self._shape: tuple[int, ...] | None = None
        self._memo: tuple[object, object] | None = None
        self._write_index: tuple[tuple[int, ...], torch.Tensor] | None = None

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

    # saving and restoring -----------------------------------------------------------------------
    def state_dict(self) -> dict:
        """A copy of the cache's content (tensors on the CPU) for :meth:`load_state_dict`: the
        same groups come back in the same slots, so attention over the restored cache is
        bit-identical (a resumed rollout continues exactly)."""
        return {
            "window": self.window,
            "sink": self.sink,
            "keys": [k.to("cpu", copy=True) for k in self.keys],
            "values": [v.to("cpu", copy=True) for v in self.values],
            "slot_group": list(self.slot_group),
            "num_appended": self.num_appended,
            "shape": None if self._shape is None else list(self._shape),
            "residue_mask": None
            if self._residue_mask is None
            else self._residue_mask.to("cpu", copy=True),
        }

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        """Replace the content by a :meth:`state_dict` of a cache with the same window and
        sink (keys and values moved to ``device``)."""
        if (state["window"], state["sink"]) != (self.window, self.sink):
            raise ValueError(
                f"KVCache state has window={state['window']}, sink={state['sink']}; "
                f"this cache window={self.window}, sink={self.sink}"
            )
        self.reset()
        self.keys = [k.to(device) for k in state["keys"]]
        self.values = [v.to(device) for v in state["values"]]
        self.slot_group = list(state["slot_group"])
        self.num_appended = int(state["num_appended"])
        self._shape = None if state["shape"] is None else tuple(state["shape"])
        mask = state["residue_mask"]
        self._residue_mask = None if mask is None else mask.to(device)

    # model-side API ---------------------------------------------------------------------------
    def _capacity(self) -> int:
        if self.window is None:
            return 8
        return self.window + int(self.sink) + 2

    def open_slot(
        self,
        residue_mask: torch.Tensor,
        num_layers: int,
        num_heads: int,
        key_dim: int,
        value_dim: int,
        dtype: torch.dtype,
        count: int = 1,
    ) -> int | list[int]:
        """Reserve a free slot for the group about to run (``count`` distinct slots, as a list,
        for ``count`` groups in one pass); allocate storage on first use.

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
        if len(free) < count:
            self._allocate(2 * self.num_slots, self.keys[0].dtype, self.keys[0].device)
            free = [i for i, g in enumerate(self.slot_group) if g < 0]
        return free[0] if count == 1 else free[:count]

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

    def write_tokens(
        self, layer: int, index: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
    ) -> None:
        """Store keys ``(B, H, G L, dk)`` and values ``(B, H, G L, dv)`` at the token positions
        ``index`` of :meth:`token_index` (a tensor made outside the pass, so that a compiled
        caller does not specialise on the slot)."""
        self.keys[layer].index_copy_(2, index, keys)
        self.values[layer].index_copy_(2, index, values)

    def token_index(self, slot: int | list[int]) -> torch.Tensor:
        """Token positions ``(G L,)`` of the slots, in order; kept for the pass's other layers
        (one copy per layer instead of one per slot and layer)."""
        slots = (slot,) if isinstance(slot, int) else tuple(slot)
        if self._write_index is None or self._write_index[0] != slots:
            l = self.num_residues
            offsets = torch.tensor(slots, device=self.keys[0].device)[:, None] * l
            index = (offsets + torch.arange(l, device=offsets.device)).flatten()
            self._write_index = (slots, index)
        return self._write_index[1]

    def visibility(self, slot: int | list[int]) -> tuple[int, torch.Tensor | None]:
        """What query groups whose own keys sit in ``slot`` may see (the same for every layer).

        With a list of slots (clean groups being appended, then a last query group, in time
        order) group ``i`` sees the slots ``slot[: i + 1]`` and the held groups that the
        window keeps after the ``i`` groups before it are committed: what it would see if each
        earlier group had been appended in a pass of its own.

        Returns the number ``S`` of leading slots covering the held groups and the slots, and a
        bool key mask ``(B, 1, 1 | G L, S L)`` (None when every query sees every key in those
        slots).
        """
        slots = [slot] if isinstance(slot, int) else list(slot)
        held = [i for i, g in enumerate(self.slot_group) if g >= 0]
        n = self.num_slots if self.static else max(held + slots) + 1
        if (
            not self.static
            and len(slots) == 1
            and len(set(held + slots)) == n
            and bool(self._residue_mask.all())
        ):
            return n, None
        device = self._residue_mask.device
        slot_visible = torch.zeros(len(slots), n, dtype=torch.bool, device=device)
        for i in range(len(slots)):
            slot_visible[i, [j for j in held if self._kept(self.slot_group[j], i)]] = True
            slot_visible[i, slots[: i + 1]] = True
        # (B, G, S, L): query group, key slot, key residue
        key_mask = slot_visible[None, :, :, None] & self._residue_mask[:, None, None, :]
        b, g, l = key_mask.shape[0], len(slots), self.num_residues
        key_mask = key_mask.reshape(b, g, 1, n * l)
        if g == 1:
            return n, key_mask.reshape(b, 1, 1, n * l)
        return n, key_mask.expand(b, g, l, n * l).reshape(b, 1, g * l, n * l)

    def memo(self, key: object, compute):
        """``compute()``, remembered while ``key`` (the same object, e.g. a protein's
        conditioning) is passed: features that stay fixed during a rollout are computed once."""
        if self._memo is None or self._memo[0] is not key:
            self._memo = (key, compute())
        return self._memo[1]

    def _kept(self, group: int, commits: int) -> bool:
        """Whether held ``group`` stays in the window after ``commits`` more appended groups."""
        if self.window is None or (self.sink and group == 0):
            return True
        return group >= self.num_appended + commits - self.window

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
        for i, g in enumerate(self.slot_group):
            if g >= 0 and not self._kept(g, 0):
                self.slot_group[i] = -1
