"""Memory modules behind one protocol (see memory/base.py)."""

from memory.base import MemoryModule, State, get, make, names, register
from memory.bit import BitMemory as BitMemory
from memory.dual import DualMemory as DualMemory
from memory.persistent.module import PersistentMemory as PersistentMemory
from memory.recurrent import GRU, LSTM
from memory.slot import SlotMemory as SlotMemory
from memory.window import FrameStack as FrameStack
from memory.window import WindowAttention as WindowAttention

__all__ = ["GRU", "LSTM", "MemoryModule", "State", "get", "make", "names", "register"]
