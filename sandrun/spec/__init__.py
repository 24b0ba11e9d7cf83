"""What users ask for: job specs and the parsing of their quantities."""

from __future__ import annotations

from sandrun.spec.gpus import GpuRequest
from sandrun.spec.job import JobSpec, Repository
from sandrun.spec.parse import load_spec_file, parse_spec
from sandrun.spec.policies import Limits, RetryOn, RetryPolicy, WarmPolicy
from sandrun.spec.units import format_duration, parse_duration, parse_memory_mb

__all__ = [
    "GpuRequest",
    "JobSpec",
    "Limits",
    "Repository",
    "RetryOn",
    "RetryPolicy",
    "WarmPolicy",
    "format_duration",
    "load_spec_file",
    "parse_duration",
    "parse_memory_mb",
    "parse_spec",
]
