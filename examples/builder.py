"""The fluent builder: every piece by name, checked together at .submit().

python examples/builder.py
"""

import sandrun
from sandrun.errors import InvalidSpec

client = sandrun.connect()

job = (
    client.job()
    .name("greet")
    .code("import sys\nprint('hello,', ' and '.join(sys.argv[1:]))", language="python")
    .args(["Ada", "Grace"])
    .cpus(1)
    .memory("256MB")
    .timeout("2m")
    .retries(2, backoff="exponential")
    .labels({"example": "builder"})
    .priority("high")
    .submit()
)
print(job.wait().log_text().strip())

# Conflicting or missing pieces fail before anything is sent, all in one error.
try:
    client.job().shell("make").command(["make"]).submit()
except InvalidSpec as exc:
    print("refused:", exc)
