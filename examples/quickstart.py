"""Run a command, follow its logs, read its outputs.

    python examples/quickstart.py

With no SANDRUN_URL this runs on this machine (SQLite state, a local agent); with
SANDRUN_URL (and SANDRUN_TOKEN) set, the same code runs on a server's agents.
"""

import sandrun

client = sandrun.connect()

# The current directory is uploaded as the job's working directory (.sandrunignore
# says what to leave out); `outputs` are kept after the run.
job = client.run(
    "python3 -c 'print(sum(range(101)))' | tee total.txt",
    outputs=["total.txt"],
    timeout="5m",
)
print("submitted", job.id)
for line in job.logs(follow=True):
    print("log:", line)
job.wait(check=True)  # raises JobFailedError (exit code, log tail) if it did not complete
print("status:", job.status.value, "exit code:", job.exit_code)
print("output:", job.read_text("total.txt").strip())
