"""A repository job: the agent checks out the exact commit of a tag and runs in it.

    python examples/repository.py [URL] [REF]

Without arguments it makes a small git repository in a temporary directory and runs its
tag v1 through a file:// URL, so the example needs no network.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import sandrun


def demo_repository() -> str:
    root = Path(tempfile.mkdtemp(prefix="sandrun-example-repo-"))

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    (root / "train.py").write_text("import sys\nprint('training from', sys.argv[1:])\n")
    git("add", ".")
    git("-c", "user.name=example", "-c", "user.email=e@example.com", "commit", "-q", "-m", "v1")
    git("tag", "v1")
    return f"file://{root}"


url = sys.argv[1] if len(sys.argv) > 1 else demo_repository()
ref = sys.argv[2] if len(sys.argv) > 2 else "v1"
client = sandrun.connect()
job = client.job().repository(url, ref=ref, entrypoint="train.py").args(["--epochs", "3"])
done = job.submit().wait(check=True)
print(done.log_text().strip())
print("ran commit", done.attempts[-1].git_commit)
