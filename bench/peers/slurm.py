"""A throwaway single-node Slurm (Debian's slurm-wlm): munged, slurmctld and slurmd with
their own key, config, ports, spool and sockets under one directory, tuned for throughput
as Slurm's high-throughput guide says (no accounting, no prolog, quiet logs, a scheduler
that runs at once)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
DAEMONS = ["munged", "slurmctld", "slurmd"]

CONFIG = """\
ClusterName=bench
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
AuthInfo=socket={dir}/munge.sock
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
SlurmctldDebug=error
SlurmdDebug=error
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/builtin
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,default_queue_depth=1000
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
MaxJobCount=200000
MaxArraySize=200001
MinJobAge=2
ReturnToService=2
NodeName={host} CPUs={cpus} RealMemory=1000 State=UNKNOWN
PartitionName=bench Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def slurm_problem() -> str | None:
    """None if Slurm can be started here (installing it from Debian if we may), else why."""
    if all(shutil.which(d) or Path(f"/usr/sbin/{d}").exists() for d in DAEMONS):
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "slurm-wlm is not installed, and installing it needs root and apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(
        ["apt-get", "install", "-y", "-qq", *PACKAGES], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        return f"apt-get install {' '.join(PACKAGES)} failed: {done.stderr.strip()[-300:]}"
    return None


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SlurmCluster:
    def __init__(self, root: Path, cpus: int = 2) -> None:
        self.root = root
        self.cpus = cpus
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = {"SLURM_CONF": str(root / "slurm.conf"), "BENCH_SLURM_DIR": str(root)}

    def __enter__(self) -> SlurmCluster:
        r = self.root
        for sub in ("state", "spool", "out"):
            (r / sub).mkdir()
        key = r / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        host = socket.gethostname().split(".")[0]
        (r / "slurm.conf").write_text(
            CONFIG.format(host=host, dir=r, cpus=self.cpus, ctld_port=_port(), d_port=_port())
        )
        env = {**os.environ, **self.env}
        daemon = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
        self.procs.append(
            subprocess.Popen(
                [
                    "/usr/sbin/munged",
                    "--foreground",
                    "--force",
                    f"--key-file={key}",
                    f"--socket={r}/munge.sock",
                    f"--pid-file={r}/munged.pid",
                    f"--log-file={r}/munged.log",
                    f"--seed-file={r}/munged.seed",
                ],
                **daemon,  # type: ignore[arg-type]
            )
        )
        self._wait(lambda: (r / "munge.sock").exists(), "munged")
        self.procs.append(subprocess.Popen(["/usr/sbin/slurmctld", "-D", "-i"], **daemon))  # type: ignore[arg-type]
        self.procs.append(subprocess.Popen(["/usr/sbin/slurmd", "-D"], **daemon))  # type: ignore[arg-type]
        self._wait(self._node_idle, "slurmd to register as idle")
        return self

    def _node_idle(self) -> bool:
        done = subprocess.run(
            ["sinfo", "-h", "-o", "%T"],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
        )
        return done.returncode == 0 and done.stdout.strip() == "idle"

    def _wait(self, check: object, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not check():  # type: ignore[operator]
            if any(p.poll() is not None for p in self.procs):
                logs = "; ".join(
                    p.read_text()[-400:] for p in self.root.glob("*.log") if p.exists()
                )
                raise RuntimeError(f"a Slurm daemon exited while waiting for {what}: {logs}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
