"""Look inside a running job, and keep a Python interpreter alive in one.

python examples/exec_and_session.py
"""

import sandrun

client = sandrun.connect()

# A job that writes a file and keeps running; an exec runs inside it, in its directory.
job = client.run("echo 'epoch 3 of 10' > progress.txt; sleep 60", upload_code=False)
job.wait_until_running()
while not job.exec("test -s progress.txt").ok:  # it may not have written it yet
    pass
print("exec:", job.exec("cat progress.txt").stdout.decode().strip())
job.cancel()

# A session: each cell runs in the same interpreter, its state kept between cells.
with client.session(cpus=1) as session:
    session.execute("total = sum(range(101))")
    print("cell:", session.execute("total").value)
    print("cell raised:", session.execute("1 / 0").error_type)
print("session:", session.job.refresh().status)
