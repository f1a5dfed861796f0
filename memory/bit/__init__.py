"""BitMemory: 65,536 32-bit words per env addressed by product keys.

``module`` holds :class:`BitMemory` and its reference, ``chunk`` the training
path, ``store`` the word store and ``bits`` bit packing and product-key addresses.
"""

from memworld.memory.bit.module import BitMemory

__all__ = ["BitMemory"]
