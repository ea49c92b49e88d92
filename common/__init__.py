"""Shared runtime pieces: settings, logging, the root error."""
