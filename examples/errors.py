"""One error hierarchy: every failure is a SandrunError with a code, a message that
names the field, and suggestions.

    python examples/errors.py
"""

import sandrun
from sandrun.errors import InvalidSpec, JobFailedError, JobNotFoundError, SandrunError

client = sandrun.connect()

try:
    client.run("true", cpus=-1, upload_code=False)
except InvalidSpec as exc:
    print(f"{exc.code}: {exc.message} (field {exc.field})")

try:
    client.run("true", timout=5, upload_code=False)
except InvalidSpec as exc:
    print(f"{exc.code}: {exc}")

try:
    client.get("no-such-job")
except JobNotFoundError as exc:
    print(f"{exc.code}: {exc.message}")

try:
    client.run("echo going down; exit 3", upload_code=False).wait(check=True)
except JobFailedError as exc:
    print(f"{exc.code}: exit code {exc.exit_code}, last log line {exc.log_tail!r}")

assert issubclass(JobFailedError, SandrunError)
