"""LeWorld from the command line: ``memworld leworld params|train|eval`` (``cli``) and
its run folders (``runs``)."""
