"""The memory experiments of memnet-slot-memory.md and lmcode-dual-memory.md.

- :mod:`.distance`: accuracy against recall distance for every module.
- :mod:`.continual`: forgetting curves under a ``DistributionShift``.
- :mod:`.forgetting`: learned forgetting dynamics (slot lifetimes, write
  frequency, read entropy, heatmaps, Kaplan-Meier slot survival).

Each writes a JSON table and PNG plots under its experiment folder.
"""
