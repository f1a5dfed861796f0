"""GTrXL: a gated Transformer-XL whose memory of past hidden states is the carried state.

Every layer keeps the last ``mem_len`` hidden states that entered it (the
Transformer-XL memory) and attends from each new step to them and to the
chunk's own earlier steps; keys and values are recomputed from the remembered
states with the layer's current weights.  Residual connections are replaced by
GRU-type gates initialised near the identity, which is what lets the
transformer train under RL's noisy gradients.  A per-row episode index (the
cumulative count of ``episode_starts``, as in memory/window.py) hides every
remembered state from before the row's latest episode start, per step, inside
the chunk as across chunks.  A rollout step (``T == 1``, :meth:`GTrXL.step`) runs
the same arithmetic in fewer torch calls and is tested against
:meth:`GTrXL.forward_reference`, the chunk code.

``block`` holds a layer (attention, the GRU-type gates, the MLP) and its one-step
arithmetic, ``module`` the registered module and its rollout step.
"""

from memworld.memory.gtrxl.block import GRUGate, GTrXLBlock, attend, gate_step
from memworld.memory.gtrxl.module import GTrXL

__all__ = ["GRUGate", "GTrXL", "GTrXLBlock", "attend", "gate_step"]
