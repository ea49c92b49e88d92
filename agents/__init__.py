"""Market agents."""
