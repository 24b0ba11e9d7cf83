"""The node daemon: capability detection, claim loop, executor, log pump, outputs."""
