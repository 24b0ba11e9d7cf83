"""The fluent builder: `client.job().name("train").code(src).gpu("a100").submit()`.

Each method records one piece; `.submit()` (or `.spec()`) checks them together and fails
with one error naming every conflict or missing piece, before anything is sent.
"""

from __future__ import annotations

import shlex
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

from sandrun.client.session import DEFAULT_IDLE, Session, kernel_shell
from sandrun.errors import InvalidSpec, SandrunError
from sandrun.spec import JobSpec, parse_memory_mb, parse_spec
from sandrun.spec.gpus import gpu_request

if TYPE_CHECKING:
    from sandrun.client.job import Job
    from sandrun.client.transport import Transport


class Submits(Protocol):
    """What the builder needs of a client: submit a spec, and store a blob."""

    transport: Transport

    def submit(self, spec: JobSpec, *, upload_code: bool = False) -> Job: ...


INTERPRETERS = {
    "python": "python3",
    "bash": "bash",
    "sh": "sh",
    "node": "node",
    "javascript": "node",
    "ruby": "ruby",
    "perl": "perl",
}
_BY_SUFFIX = {".py": "python3", ".sh": "bash", ".js": "node", ".rb": "ruby", ".pl": "perl"}
BACKOFFS = {"exponential": 2.0, "fixed": 1.0}


class JobBuilder:
    def __init__(self, client: Submits) -> None:
        self._client = client
        self._fields: dict[str, Any] = {}
        self._programs: list[tuple[str, Any]] = []  # (kind, value): exactly one is valid
        self._args: list[str] = []
        self._problems: list[str] = []
        self._upload: bool | None = None

    # --- what to run ----------------------------------------------------------------

    def code(self, source: str, language: str = "python") -> JobBuilder:
        """Run `source` as a program in `language` (python, bash, sh, node, ruby, perl)."""
        if language not in INTERPRETERS:
            self._problems.append(
                f"code language {language!r} is not known; use one of {', '.join(INTERPRETERS)}"
            )
        self._programs.append(("code", (source, INTERPRETERS.get(language, language))))
        return self

    def command(self, argv: list[str]) -> JobBuilder:
        """Run a program with arguments, without a shell."""
        self._programs.append(("command", list(argv)))
        return self

    def shell(self, line: str) -> JobBuilder:
        """Run a line with /bin/sh -c."""
        self._programs.append(("shell", line))
        return self

    def repository(self, url: str, ref: str = "main", entrypoint: str | None = None) -> JobBuilder:
        """Check out `url` at `ref` (a branch, tag or commit) as the working directory; run
        `entrypoint` there (a file, run by its suffix: train.py with python3; or a shell
        line), or a .command() / .shell() given beside it."""
        self._fields["repository"] = {"url": url, "ref": ref}
        if entrypoint is not None:
            self._programs.append(("entrypoint", entrypoint))
        return self

    def args(self, args: list[str]) -> JobBuilder:
        """Arguments for the program given by .command(), .shell(), .code() or an entrypoint."""
        self._args.extend(str(a) for a in args)
        return self

    # --- resources and policy -------------------------------------------------------

    def name(self, name: str) -> JobBuilder:
        return self._set("name", name)

    def cpus(self, cpus: float) -> JobBuilder:
        return self._set("cpus", cpus)

    def memory(self, memory: str | int) -> JobBuilder:
        """Memory limit: MiB, or "8GB", "512MiB"."""
        return self._set("memory", memory)

    def gpu(
        self,
        type: str | list[str] | None = None,
        count: int = 1,
        memory: str | int | None = None,
    ) -> JobBuilder:
        """`count` GPUs of `type` ("a100"; "4xa100" with the count in it; or a list of
        acceptable models, ["a100", "h100"]), with at least `memory` each ("40GB")."""
        try:
            if isinstance(type, list):
                request: dict[str, Any] = {"count": 1, "type": type}
            else:
                request = gpu_request(type, field="gpu") if type is not None else {"count": 1}
            if count != 1:
                request["count"] = count
            if memory is not None:
                request["memory_gb"] = parse_memory_mb(memory) / 1024
        except (SandrunError, ValueError) as exc:
            self._problems.append(str(exc))
            return self
        return self._set("gpus", request)

    def env(self, env: dict[str, str]) -> JobBuilder:
        self._fields.setdefault("env", {}).update(env)
        return self

    environment = env  # the seed SDK's name for it

    def timeout(self, timeout: str | float) -> JobBuilder:
        """Wall-clock limit: seconds, or "90s", "2h", "1h30m"."""
        return self._set("timeout", timeout)

    def retries(
        self, limit: int, backoff: str = "exponential", delay: str | float = 1.0
    ) -> JobBuilder:
        """Retry up to `limit` times, waiting `delay`, then (exponential) doubling, or
        (fixed) the same each time."""
        if backoff not in BACKOFFS:
            self._problems.append(
                f"retries backoff {backoff!r} is not known; use {' or '.join(BACKOFFS)}"
            )
        policy = {"limit": limit, "backoff": delay, "factor": BACKOFFS.get(backoff, 2.0)}
        return self._set("retries", policy)

    def outputs(self, patterns: list[str]) -> JobBuilder:
        """Files to keep after the run: globs relative to the working directory."""
        self._fields.setdefault("outputs", []).extend(patterns)
        return self

    def labels(self, labels: dict[str, str]) -> JobBuilder:
        self._fields.setdefault("labels", {}).update(labels)
        return self

    def after(self, *jobs: Job | str, condition: str = "ok") -> JobBuilder:
        """Wait for these jobs (handles or ids) to end first; run if they end as
        `condition` says (`ok`: completed, `failed`, `any`), else end `skipped`."""
        for job in jobs:
            job_id = job if isinstance(job, str) else job.id
            self._fields.setdefault("after", []).append(f"{job_id}:{condition}")
        return self

    depends_on = after

    def result(self, path: str) -> JobBuilder:
        """A JSON file the job writes, read as its result (a pipeline step's `result`)."""
        return self._set("result", path)

    def require(self, labels: dict[str, str]) -> JobBuilder:
        """Run only on nodes with these labels (`sandrun agent --label pool=gpu-east`)."""
        self._fields.setdefault("requires", {}).update(labels)
        return self

    def priority(self, priority: int | str) -> JobBuilder:
        """low, normal, high, or an integer from -1000 to 1000."""
        return self._set("priority", priority)

    def consensus(self, consensus: str | int | dict[str, Any]) -> JobBuilder:
        """Run as replicas until k of distinct operators agree: "2-of-3", or a level —
        low (1, spot-checked), medium (2-of-3), high (3-of-5). See docs/pool.md."""
        return self._set("consensus", consensus)

    def redundancy(self, replicas: int) -> JobBuilder:
        """Run `replicas` replicas that must all agree (n-of-n)."""
        return self._set("consensus", f"{replicas}-of-{replicas}")

    def max_price(self, dollars: float) -> JobBuilder:
        """The most this job may cost (USD), where the pool prices jobs."""
        return self._set("max_price", dollars)

    def volume(
        self, name: str, mount_path: str | None = None, read_only: bool = False
    ) -> JobBuilder:
        """Mount one of your volumes (at /volumes/NAME unless `mount_path`)."""
        mount = {"name": name, "read_only": read_only}
        mount.update({"mount_path": mount_path} if mount_path else {})
        self._fields.setdefault("volumes", []).append(mount)
        return self

    def secret(self, name: str, file: str | None = None, env: str | None = None) -> JobBuilder:
        """Give the job one of your secrets: as the env var NAME (or `env`), or a `file`."""
        given = {k: v for k, v in (("name", name), ("file", file), ("env", env)) if v}
        self._fields.setdefault("secrets", []).append(given)
        return self

    def network(self, enabled: bool = True) -> JobBuilder:
        return self._set("network", enabled)

    def limits(self, **limits: Any) -> JobBuilder:
        """processes, cpu_time, file_size, log_size, stop_on_log_limit, output_size."""
        self._fields.setdefault("limits", {}).update(limits)
        return self

    def upload_code(self, enabled: bool = True) -> JobBuilder:
        """Send the current directory as the job's working directory (the default for a
        .command() or .shell() job that brings no code of its own)."""
        self._upload = enabled
        return self

    def _set(self, field: str, value: Any) -> JobBuilder:
        if field in self._fields and self._fields[field] != value:
            self._problems.append(f"{field} is set twice ({self._fields[field]!r}, {value!r})")
        self._fields[field] = value
        return self

    # --- the end --------------------------------------------------------------------

    def spec(self) -> tuple[JobSpec, bool]:
        """The JobSpec this builds (uploading a code file if it needs one), and whether
        the current directory goes with it; or one InvalidSpec naming every problem."""
        problems = list(self._problems)
        kinds = [kind for kind, _ in self._programs]
        if not kinds:
            problems.append(
                "nothing to run: give .command(), .shell(), .code() or "
                ".repository(..., entrypoint=...)"
            )
        elif len(kinds) > 1:
            problems.append(f"give one program, not {' and '.join(kinds)}")
        if "code" in kinds and "repository" in self._fields:
            problems.append(".code() and .repository() both fill the working directory")
        if problems:
            raise InvalidSpec("the job cannot be submitted: " + "; ".join(problems))
        fields = {**self._fields, **self._program(*self._programs[0])}
        spec = parse_spec(fields)
        # .code() is the whole program: only a .command() or .shell() needs this directory.
        brings = kinds[0] in ("code", "entrypoint") or spec.repository or spec.working_dir
        upload = (not brings) if self._upload is None else self._upload
        return spec, upload

    def submit(self) -> Job:
        spec, upload = self.spec()
        return self._client.submit(spec, upload_code=upload)

    def interactive(self, idle: float | str = DEFAULT_IDLE) -> Session:
        """Submit it as an interactive session: its program is a Python kernel that runs
        `session.execute(code)` cells, ending after `idle` without one."""
        if self._programs:
            self._problems.append("an interactive session runs its kernel: give no program")
        self._programs.append(("shell", kernel_shell(idle)))
        if self._upload is None:
            self._upload = False
        return Session(self.submit())

    def _program(self, kind: str, value: Any) -> dict[str, Any]:
        if kind == "command":
            return {"command": [*value, *self._args]}
        if kind == "shell":
            return {"shell": " ".join([value, *map(shlex.quote, self._args)])}
        if kind == "code":
            source, interpreter = value
            if not self._args:
                return {"script": source, "interpreter": interpreter}
            # A script takes no arguments: send it as a file and run that.
            digest = self._client.transport.put_blob(source.encode())
            return {"inputs": {"main": digest}, "command": [interpreter, "main", *self._args]}
        # An entrypoint: a shell line, or a file run by its suffix.
        if any(c.isspace() for c in value):
            return {"shell": " ".join([value, *map(shlex.quote, self._args)])}
        runner = _BY_SUFFIX.get(PurePosixPath(value).suffix)
        program = [runner, value] if runner else [f"./{value}"]
        return {"command": [*program, *self._args]}
