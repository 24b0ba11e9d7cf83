"""Warm workers: a sandbox kept between one owner's jobs, whose Python forks a child per job."""
