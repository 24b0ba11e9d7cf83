"""The async client: submit, stream logs as they come, await the end.

python examples/async_logs.py
"""

import asyncio

import sandrun


async def main() -> None:
    client = await sandrun.connect_async()
    job = await client.run("for i in 1 2 3; do echo step $i; sleep 0.2; done", upload_code=False)
    async for line in job.logs(follow=True):
        print("log:", line)
    await job.wait()
    print("status:", job.status.value)
    await client.close()


asyncio.run(main())
