"""Warm function workers: a Python kept running in a sandbox that forks one child per call."""
