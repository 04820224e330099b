"""Runnable examples composing the full MFM from factorkit blocks, and their data."""
"""Runnable factorkit examples and their data loaders."""
