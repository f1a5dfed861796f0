"""memworld package."""
