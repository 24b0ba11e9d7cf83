"""The SDK entry point: `connect()` and the Client it returns."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError as PydanticError

from sandrun.bulk_models import MAX_BATCH
from sandrun.client.builder import JobBuilder
from sandrun.client.calls import call_fields, merge_call
from sandrun.client.job import Job, log_chunks
from sandrun.client.runs import Run, load_pipeline, with_code
from sandrun.client.session import DEFAULT_IDLE, Session, kernel_shell
from sandrun.client.task import to_spec
from sandrun.client.transport import Transport
from sandrun.data_models import NamedEnvironment, SecretInfo, Volume
from sandrun.errors import TimeoutError, ValidationError
from sandrun.home import Home
from sandrun.models import Instance, JobPage, LogChunk, NodeInfo
from sandrun.pool.models import (
    Balance,
    CostReport,
    LedgerCheck,
    PoolNode,
    PoolStatus,
    Transfer,
)
from sandrun.retention_models import GcReport
from sandrun.spec import JobSpec, parse_spec
from sandrun.spec.environment import Packages
from sandrun.spec.parse import invalid_spec_from


def connect(
    url: str | None = None,
    *,
    token: str | None = None,
    home: str | Path | None = None,
    key: str | Path | None = None,
) -> Client:
    """A client of the server at `url` (or $SANDRUN_URL, with $SANDRUN_TOKEN), else
    embedded: SQLite under `home` and a local agent. The API is the same either way.
    `key` (or $SANDRUN_KEY): a key file whose key signs each request instead of a token —
    an identity without an account, where the server's policy takes them (made if absent)."""
    url = url or os.environ.get("SANDRUN_URL")
    if url:
        from sandrun.client.remote import HttpTransport  # only what this mode needs

        key = key or os.environ.get("SANDRUN_KEY") or None
        identity = None
        if key is not None and not token:
            from sandrun.signing import Identity

            identity = Identity.load_or_create(Path(key).expanduser())
        token = None if identity else token or os.environ.get("SANDRUN_TOKEN")
        return Client(HttpTransport(url, token, key=identity))
    from sandrun.client.local import EmbeddedTransport

    return Client(EmbeddedTransport(Home.resolve(home)))


class Client:
    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._bundles: dict[Path, tuple[int, str]] = {}  # root -> (tree signature, digest)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, spec: JobSpec | dict[str, Any], *, upload_code: bool = False) -> Job:
        """Record the job durably; it is pending once this returns. With `upload_code`,
        the current directory goes with it as its working directory."""
        (parsed,) = self._specs([spec], upload_code)
        return Job(self.transport, self.transport.submit(parsed))

    def submit_many(
        self, specs: Iterable[JobSpec | dict[str, Any]], *, upload_code: bool = False
    ) -> list[Job]:
        """Submit many jobs at once: one request and one transaction per 1,000, queued in
        order. Every spec is checked before any is sent; a bad one refuses its batch."""
        parsed = self._specs(specs, upload_code)
        jobs: list[Job] = []
        for first in range(0, len(parsed), MAX_BATCH):
            records = self.transport.submit_many(parsed[first : first + MAX_BATCH])
            jobs += [Job(self.transport, record) for record in records]
        return jobs

    def _specs(self, specs: Iterable[JobSpec | dict[str, Any]], upload_code: bool) -> list[JobSpec]:
        """Validated specs; with `upload_code`, the current directory goes with each as its
        working directory (uploaded once)."""
        parsed = [parse_spec(spec) for spec in specs]
        if upload_code and parsed:
            code = self.upload_directory(Path.cwd())
            parsed = [parse_spec({**s.to_json_dict(), "code": code}) for s in parsed]
        return parsed

    def wait(self, jobs: Iterable[Job], timeout: float | None = None) -> list[Job]:
        """Block until every one of `jobs` has ended (their records refreshed), asking
        about up to 1,000 at a time; raise TimeoutError after `timeout` seconds."""
        waiting = {job.id: job for job in jobs}
        done = list(waiting.values())
        deadline = None if timeout is None else time.monotonic() + timeout
        while waiting:
            left = 30.0 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"{len(waiting)} of {len(done)} jobs have not ended after {timeout}s",
                    field="timeout",
                )
            for record in self.transport.wait_all(list(waiting)[:MAX_BATCH], left):
                waiting.pop(record.id).record = record
        return done

    def run(self, command: object = None, /, **fields: Any) -> Job:
        """Submit a shell string, an argv list, a JobSpec, a TaskConfig or a dict, with
        more spec fields (core or Flow-style: instance_type, max_run_time_hours...).

        The current directory is uploaded as the job's working directory unless
        `upload_code=False`, or the job brings its own (working_dir, code, repository)."""
        spec, upload = to_spec(command, fields)
        return self.submit(spec, upload_code=upload)

    def session(self, idle: float | str = DEFAULT_IDLE, /, **fields: Any) -> Session:
        """Start an interactive session: a job that keeps a Python interpreter alive for
        `session.execute(code)` cells, with the resources and sandbox of `fields` (as
        `run` takes them; the current directory goes with it only with upload_code=True).
        It ends on `close()`, after `idle` without a cell, or when cancelled."""
        fields.setdefault("upload_code", False)
        fields.setdefault("name", "session")
        spec, upload = to_spec(kernel_shell(idle), fields)
        return Session(self.submit(spec, upload_code=upload))

    def job(self) -> JobBuilder:
        """A fluent builder: `client.job().shell("make").cpus(2).submit()`."""
        return JobBuilder(self)

    def invoke(
        self,
        file: str | Path,
        function: str,
        args: list[Any] | tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        **fields: Any,
    ) -> Any:
        """Run `function` from a Python source `file` (which need not import sandrun) as a
        job with `fields` (gpus, cpus, memory, timeout...); return its value or raise its
        error."""
        if "gpu" in fields:  # as @app.function spells it
            fields["gpus"] = fields.pop("gpu")
        path = Path(file)
        try:
            source = path.read_bytes()
        except OSError as exc:
            raise ValidationError(
                f"cannot read {str(path)!r}: {exc.strerror}", field="file"
            ) from None
        call = call_fields(self.transport, tuple(args), kwargs or {}, file=(path.name, function))
        call["inputs"][path.name] = self.transport.put_blob(source)
        fields.setdefault("name", re.sub(r"[^A-Za-z0-9_-]", "_", function)[:128] or "invoke")
        return self.submit(merge_call(fields, call)).result()

    def upload_directory(self, root: Path) -> str:
        """Upload `root` as a code bundle (honouring .sandrunignore); return its digest.

        An unchanged tree is neither re-packed nor re-sent."""
        from sandrun.client.upload import list_files, make_bundle  # a reader needs neither

        root = root.resolve()
        files = list_files(root)
        signature = hash(tuple((rel, st.st_size, st.st_mtime_ns) for rel, st in files))
        known = self._bundles.get(root)
        if known and known[0] == signature and self.transport.has_blob(known[1]):
            return known[1]
        bundle = make_bundle(root, files)
        if not self.transport.has_blob(bundle.digest):
            self.transport.put_blob(bundle.data)
        self._bundles[root] = (signature, bundle.digest)
        return bundle.digest

    def get(self, job_id: str) -> Job:
        return Job(self.transport, self.transport.get(job_id))

    def jobs(
        self,
        *,
        state: str | None = None,
        name: str | None = None,
        label: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        return self.transport.list_jobs(
            state=state, name=name, label=label, limit=limit, cursor=cursor
        )

    def cancel(self, job_id: str) -> Job:
        return Job(self.transport, self.transport.cancel(job_id))

    def logs(
        self, job_id: str, *, follow: bool = False, attempt: int | None = None
    ) -> Iterator[LogChunk]:
        """Chunks in order; with `follow`, keep yielding until the job has ended."""
        return log_chunks(self.transport, job_id, follow, attempt)

    def nodes(self) -> list[NodeInfo]:
        return self.transport.nodes()

    def find_instances(
        self, min_gpu_memory_gb: float | Mapping[str, float] = 0, max_price: float | None = None
    ) -> list[Instance]:
        """GPU instance types the pool can run now (e.g. "2xa100-80gb"), with a price per
        hour, cheapest first; use a name as `instance_type`. The filters may also come as
        one mapping, as the seed SDK passes them: {"gpu_memory_gb": 80, "max_price": 10}."""
        if isinstance(min_gpu_memory_gb, Mapping):
            min_gpu_memory_gb, max_price = _instance_filters(min_gpu_memory_gb, max_price)
        return self.transport.instances(min_gpu_memory_gb, max_price)

    def why_pending(self, job_id: str) -> str | None:
        """Why a pending job has not started (None once it has)."""
        return self.transport.why_pending(job_id)

    def run_pipeline(
        self,
        definition: str | Path | dict[str, Any],
        params: dict[str, Any] | None = None,
        *,
        code: str | Path | None = None,
    ) -> Run:
        """Start a run of a pipeline (a YAML file, or a definition as a mapping), with
        `params` over its own (`--set`); a bad definition is refused whole. `code`: a
        directory uploaded as the working directory of each step that brings none."""
        data = load_pipeline(definition)
        if code is not None:
            data = with_code(data, self.upload_directory(Path(code)))
        return Run(self.transport, self.transport.run_pipeline(data, params or {}))

    def pipeline(self, run_id: str) -> Run:
        return Run(self.transport, self.transport.pipeline_status(run_id).run)

    def pipelines(self, limit: int = 50) -> list[Run]:
        return [Run(self.transport, r) for r in self.transport.pipelines(limit)]

    # --- the pool (docs/pool.md) ---------------------------------------------------------

    def balance(self, owner: str | None = None) -> Balance:
        """What you (an admin: `owner`) have available, and hold in escrow, in USD."""
        return self.transport.balance(owner)

    def credit(self, owner: str, amount: float, memo: str | None = None) -> Balance:
        """Add USD to an owner's balance (admins; a negative amount takes some back)."""
        return self.transport.credit(owner, amount, memo)

    def ledger(self, job: str | None = None, account: str | None = None) -> list[Transfer]:
        """The transfers of one job, or touching an account (yours by default)."""
        return self.transport.ledger(job, account)

    def ledger_check(self) -> LedgerCheck:
        """Whether balances equal their transfers and no ended job holds escrow (admins)."""
        return self.transport.ledger_check()

    def cost(self, since: str = "7d", by: str = "job") -> CostReport:
        """What your jobs that ended in the last `since` cost, by job, label or day."""
        return self.transport.cost_report(since, by)

    def pool_status(self) -> PoolStatus:
        return self.transport.pool_status()

    def pool_nodes(self) -> list[PoolNode]:
        """Each node with its reputation and its operator's."""
        return self.transport.pool_nodes()

    def quarantine_node(self, node: str, quarantined: bool = True) -> PoolNode:
        """Stop (or, `quarantined=False`, release) a node or `operator:NAME` (admins)."""
        return self.transport.set_quarantined(node, quarantined)

    # --- volumes and secrets (docs/data.md) ------------------------------------------

    def create_volume(
        self,
        name: str | None = None,
        size_gb: float | None = None,
        *,
        size: int | str | None = None,
        shared: bool = False,
    ) -> Volume:
        """A named volume of yours (default name `volume-<hex>`), `size_gb` GiB or `size`
        ("100GB", or MiB; default 10 GiB); `shared`: several jobs may write it at once."""
        if size_gb is not None and size is not None:
            raise ValidationError("give size_gb or size, not both", field="size")
        given = f"{size_gb}GB" if size_gb is not None else size
        return self.transport.create_volume(name or f"volume-{os.urandom(4).hex()}", given, shared)

    def list_volumes(self) -> list[Volume]:
        return self.transport.volumes()

    def volume(self, name_or_id: str) -> Volume:
        return self.transport.volume(name_or_id)

    def delete_volume(self, volume: str | Volume) -> Volume:
        """Delete a volume (by id, name or record) that no unfinished job mounts."""
        return self.transport.delete_volume(volume if isinstance(volume, str) else volume.id)

    def create_environment(
        self,
        name: str,
        requirements: list[str] | None = None,
        python: str | None = None,
        requirements_file: str | Path | None = None,
    ) -> NamedEnvironment:
        """Name a Python version and requirements (a list, or a requirements.txt read
        here); jobs then say `environment: NAME` and agents build it once."""
        listed = list(requirements or [])
        if requirements_file is not None:
            from sandrun.spec.environment import requirements_of

            path = Path(requirements_file)
            try:
                listed += requirements_of(path.read_text(), path.name)
            except (OSError, ValueError) as exc:
                raise ValidationError(f"{path}: {exc}", field="requirements") from None
        try:
            spec = Packages(python=python, requirements=listed)
        except PydanticError as exc:
            raise invalid_spec_from(list(exc.errors())) from None
        return self.transport.create_environment(name, spec)

    def list_environments(self) -> list[NamedEnvironment]:
        return self.transport.environments()

    def delete_environment(self, name: str) -> None:
        self.transport.delete_environment(name)

    def set_secret(self, name: str, value: str) -> None:
        """Set one of your secrets; a job gets it by naming it (`secrets: [NAME]`)."""
        self.transport.set_secret(name, value)

    def list_secrets(self) -> list[SecretInfo]:
        """Your secrets' names and dates (values never come back)."""
        return self.transport.secrets()

    def delete_secret(self, name: str) -> None:
        self.transport.delete_secret(name)

    def collect_garbage(self, older_than: float = 30 * 86400, purge_jobs: bool = False) -> GcReport:
        """Retention (admins): remove the logs of jobs that ended more than `older_than`
        seconds ago (with `purge_jobs`, the jobs), then blobs nothing refers to."""
        return self.transport.collect_garbage(older_than, purge_jobs)


_INSTANCE_FILTERS = ("gpu_memory_gb", "min_gpu_memory_gb", "max_price")


def _instance_filters(
    given: Mapping[str, float], max_price: float | None
) -> tuple[float, float | None]:
    unknown = sorted(set(given) - set(_INSTANCE_FILTERS))
    if unknown:
        raise ValidationError(
            f"find_instances: unknown filter {unknown[0]!r}",
            field=unknown[0],
            suggestions=["valid: " + ", ".join(_INSTANCE_FILTERS)],
        )
    memory = given.get("min_gpu_memory_gb", given.get("gpu_memory_gb", 0))
    return float(memory), given.get("max_price", max_price)
