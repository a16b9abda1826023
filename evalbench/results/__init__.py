"""Records, stores and tables."""
