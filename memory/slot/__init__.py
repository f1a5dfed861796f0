"""SlotMemory: a bank of slots read by sparse top-k heads and written by gated
least-recently-used writes, with learned forgetting.

``module`` holds :class:`SlotMemory` and its step-by-step reference, ``bank``
the slot reads and writes, ``log`` the writes a chunk makes, ``controller`` the
controllers, ``rollout`` the one-step path and ``chunk`` the training path.
"""

from memworld.memory.slot.module import SlotMemory

__all__ = ["SlotMemory"]
