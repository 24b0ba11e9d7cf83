"""What checkpoints and pauses cost (docs/lifecycle.md), against baselines in the same run.

    python bench/checkpoints.py [--size 64] [--samples 5]

1. Packing and restoring a checkpoint directory of `--size` MiB — one random file, and
   the same bytes as 1,000 files — with the agent's own code (agent/checkpoints.py: a tar
   into its artifact store, hashed as it goes; the restore's checked unpack), against GNU
   `tar cf` / `tar xf` of the same directory, and against `tar czf` (what gzip would cost).
2. The gap between an attempt that checkpointed `--size` MiB and its next attempt's start
   (embedded: the end's report, the requeue, the claim, the restore), against the gap of a
   plain retry (`exit 1`, `retries` with no backoff) of a job of the same size.
3. How long a pause takes to freeze a running job (`pause()` until its `frozen` event), and
   a resume to thaw it, embedded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from server_throughput import stop_local_agent

from sandrun.agent.checkpoints import pack
from sandrun.agent.workspace import unpack
from sandrun.artifacts import LocalArtifactStore
from sandrun.client import Job, connect
from sandrun.states import JobState


def _fill(where: Path, size_mb: int, files: int) -> None:
    where.mkdir(parents=True)
    each = (size_mb << 20) // files
    for i in range(files):
        (where / f"part{i:04d}.bin").write_bytes(os.urandom(each))


def pack_and_restore(root: Path, size_mb: int, files: int) -> dict[str, float]:
    """Seconds to pack and to restore, ours and GNU tar's."""
    source = root / f"src-{files}"
    _fill(source, size_mb, files)
    store = LocalArtifactStore(root / "store")
    begin = time.perf_counter()
    with tempfile.TemporaryFile(dir=root) as spool:
        pack(source, size_mb << 21, spool)
        spool.seek(0)
        digest, _ = store.put_stream(spool)
    packed = time.perf_counter() - begin
    dest = root / f"ours-{files}"
    dest.mkdir()
    begin = time.perf_counter()
    unpack(store.path(digest), dest, "the checkpoint")
    restored = time.perf_counter() - begin
    archive = root / f"gnu-{files}.tar"
    begin = time.perf_counter()
    subprocess.run(["tar", "cf", str(archive), "-C", str(source), "."], check=True)
    gnu_pack = time.perf_counter() - begin
    out = root / f"gnu-{files}"
    out.mkdir()
    begin = time.perf_counter()
    subprocess.run(["tar", "xf", str(archive), "-C", str(out)], check=True)
    gnu_restore = time.perf_counter() - begin
    begin = time.perf_counter()
    subprocess.run(["tar", "czf", f"{archive}.gz", "-C", str(source), "."], check=True)
    gzipped = time.perf_counter() - begin
    for path in (source, dest, out):
        shutil.rmtree(path)
    return {
        "pack": packed,
        "restore": restored,
        "tar cf": gnu_pack,
        "tar xf": gnu_restore,
        "tar czf": gzipped,
    }


def _gap(job: Job) -> float:
    """Seconds from the first attempt's end to the second's start."""
    first, second = job.attempts[:2]
    assert first.finished_at is not None and second.started_at is not None
    return second.started_at - first.finished_at


def requeue_gaps(home: Path, size_mb: int, samples: int) -> tuple[float, float]:
    """p50 gap after a checkpoint of `size_mb` MiB, and after a plain retry."""
    write = f'head -c {size_mb << 20} /dev/urandom > "$SANDRUN_CHECKPOINT_DIR/state"'
    saved = f'[ -s "$SANDRUN_CHECKPOINT_DIR/state" ] && exit 0; {write}; exit 85'
    retried = f'[ "$SANDRUN_ATTEMPT" = 2 ] && exit 0; {write}; exit 1'
    with connect(home=home) as client:
        client.run("true", upload_code=False).wait(60)  # the agent is up
        checkpointed, plain = [], []
        for _ in range(samples):
            job = client.run(saved, upload_code=False, limits={"output_size": "1GB"}).wait(120)
            assert job.record.state is JobState.COMPLETED, job.record.message
            checkpointed.append(_gap(job))
            job = client.run(retried, upload_code=False, retries={"limit": 1, "backoff": 0.001})
            assert job.wait(120).record.state is JobState.COMPLETED, job.record.message
            plain.append(_gap(job))
    return statistics.median(checkpointed), statistics.median(plain)


def pause_latency(home: Path, samples: int) -> tuple[float, float]:
    """p50 seconds from pause() to the `frozen` event, and from resume() to `thawed`."""
    frozen, thawed = [], []
    with connect(home=home) as client:
        job = client.run("while :; do sleep 0.01; done", upload_code=False)
        while not job.refresh().is_running:
            time.sleep(0.01)
        for _ in range(samples):
            for act, kind, into in ((job.pause, "frozen", frozen), (job.resume, "thawed", thawed)):
                seen = sum(e.kind == kind for e in job.events)
                begin = time.time()
                act()
                while sum(e.kind == kind for e in job.events) == seen:
                    time.sleep(0.002)
                at = [e.at for e in job.events if e.kind == kind][-1]
                into.append(at - begin)
        job.cancel().wait(60)
    return statistics.median(frozen), statistics.median(thawed)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=64, help="MiB in the checkpoint")
    parser.add_argument("--samples", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(f"pack / restore of {args.size} MiB (seconds; ratio to GNU tar's):")
        for files in (1, 1000):
            t = pack_and_restore(root, args.size, files)
            print(
                f"  {files:>5} file(s): pack {t['pack']:.3f} (tar cf {t['tar cf']:.3f}, "
                f"{t['pack'] / t['tar cf']:.2f}x; tar czf {t['tar czf']:.3f})  "
                f"restore {t['restore']:.3f} (tar xf {t['tar xf']:.3f}, "
                f"{t['restore'] / t['tar xf']:.2f}x)"
            )
        home = root / "home"
        try:
            ours, plain = requeue_gaps(home, args.size, args.samples)
            frozen, thawed = pause_latency(home, args.samples)
        finally:
            stop_local_agent(home)
        print(
            f"next attempt's start after the end, p50: checkpointed {args.size} MiB "
            f"{ours * 1000:.0f} ms, plain retry {plain * 1000:.0f} ms "
            f"({ours - plain:+.3f} s for the checkpoint)"
        )
        print(f"pause -> frozen p50 {frozen * 1e3:.0f} ms; resume -> thawed {thawed * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
