"""Memory modules behind one protocol (see memory/base.py)."""

from memory.base import MemoryModule, State, make, names, register
from memory.recurrent import GRU, LSTM
from memory.slot import SlotMemory as SlotMemory

__all__ = ["GRU", "LSTM", "MemoryModule", "State", "make", "names", "register"]
