"""DualMemory: per layer, attention over recent steps, short-term slots and a
long-term key/value store with importance, eviction and consolidation.

``module`` holds :class:`DualMemory`, ``reference`` its step-by-step reference,
``chunk`` the training path, ``layer`` one layer, ``store`` and ``ltm`` the
long-term store, ``index`` its optional approximate retrieval.
"""

from memworld.memory.dual.module import DualMemory

__all__ = ["DualMemory"]
