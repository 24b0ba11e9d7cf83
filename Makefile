# One target runs everything CI runs: lint, types and all test tiers.
.PHONY: check bench
check:
	./scripts/test

bench:
	.venv/bin/python bench/throughput.py
