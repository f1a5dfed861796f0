"""Videos of agents: rollouts with the memory panel beside the env frame (``record``),
the panel itself (``panel``) and the mp4/gif writer (``writer``)."""
