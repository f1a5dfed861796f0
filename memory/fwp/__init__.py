"""A fast-weight memory: an outer-product weight matrix written and read at every step.

Per head, a slow network maps each input to a query, a key, a value and a write
strength ``beta``; the fast weight matrix ``W`` (value width x key width) is
decayed, written and then read::

    W_t = gamma * W_{t-1} + beta_t * v_t phi(k_t)^T        y_t = W_t phi(q_t)

with ``phi`` a softmax over the key width (positive features that sum to one),
so a read is a convex mixture of the written values.  Queries, keys and values
are computed from a short causal convolution of the last ``conv_width`` inputs
of the episode: a key then says what came just before a step as well as what
it holds, which is what lets a query ask for "the step after X" (with an
additive update alone, a read can tell writes apart only by their content and
their decay, not by their order).  The update is linear in ``W``, so a chunk runs
in closed form: a step's read is the carried ``W`` decayed to it plus a causal,
decayed linear attention over the chunk's own writes.  A long chunk is cut into
blocks of ``max_block`` steps, all computed at once (:func:`fwp_blocks`), so the
attention scores stay ``max_block`` squared; only the fast weights carried from one
block into the next go block by block (a loop over blocks, not over steps).
:func:`fwp_reference` is the step-by-step recurrence the chunk path is tested
against; a rollout step (``T == 1``, :meth:`FastWeightMemory.step`) runs the
recurrence directly, and is tested against :meth:`FastWeightMemory.forward_reference`.

``chunk`` holds the closed-form chunk path and the recurrence, ``module`` the module.
"""

from memworld.memory.fwp.chunk import feature_map, fwp_block, fwp_blocks, fwp_reference
from memworld.memory.fwp.module import FastWeightMemory

__all__ = ["FastWeightMemory", "feature_map", "fwp_block", "fwp_blocks", "fwp_reference"]
