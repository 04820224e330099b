"""Runnable examples composing the full MFM from factorkit blocks, and their data loaders."""
