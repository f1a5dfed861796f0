"""Sweeps: a YAML grid of envs x algorithms x memory modules x seeds, run on Ray Tune.

``config`` reads the YAML into named trials, ``space`` holds the search space,
``trial`` runs one trial, ``driver`` runs them all on Ray, ``folder`` reads a
sweep folder back, ``table`` turns it into the mean-memory-episode-return table
and ``cli`` adds ``memworld sweep`` and ``memworld table``.
"""
