"""Memory modules behind one protocol (see memory/base.py)."""

from memworld.memory.base import MemoryModule, State, get, make, names, register
from memworld.memory.bit.module import BitMemory as BitMemory
from memworld.memory.dual.module import DualMemory as DualMemory
from memworld.memory.fwp import FastWeightMemory as FastWeightMemory
from memworld.memory.gtrxl import GTrXL as GTrXL
from memworld.memory.lru import LRU as LRU
from memworld.memory.persistent.module import PersistentMemory as PersistentMemory
from memworld.memory.recurrent import GRU, LSTM
from memworld.memory.slot.module import SlotMemory as SlotMemory
from memworld.memory.window import FrameStack as FrameStack
from memworld.memory.window import WindowAttention as WindowAttention

__all__ = ["GRU", "LSTM", "MemoryModule", "State", "get", "make", "names", "register"]
