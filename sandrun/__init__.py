"""sandrun: run people's code on a pool of machines.

import sandrun
job = sandrun.connect().run("python3 train.py", cpus=2, timeout="2h")
job.wait()
"""

from __future__ import annotations

from sandrun.client import Client, Job, connect
from sandrun.errors import SandrunError
from sandrun.spec import JobSpec, RetryPolicy

__all__ = ["Client", "Job", "JobSpec", "RetryPolicy", "SandrunError", "connect"]
__version__ = "0.1.0"
