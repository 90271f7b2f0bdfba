"""Evaluation as DCASE reports it."""
