"""One module per task; each defines ``<Task>Vec`` (the batched core), ``<Task>`` (its
scalar view) and ``PRESETS``."""
