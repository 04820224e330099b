"""Runnable factorkit examples and their data loaders."""
