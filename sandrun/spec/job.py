"""JobSpec: what a user asks to run, and with what.

User-facing: unknown fields are refused (a typo must not pass silently), and every error
names the field and what would be valid. See `parse_spec`.
"""

from __future__ import annotations

import re
import shlex
from pathlib import PurePosixPath
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from sandrun.spec.base import Strict, is_stored
from sandrun.spec.consensus import CONSENSUS_PATTERN, MAX_REPLICAS, Consensus, parse_consensus
from sandrun.spec.data import MAX_MOUNTS, DataMount, SecretItem, VolumeItem, check_targets
from sandrun.spec.environment import EnvironmentField
from sandrun.spec.execsize import check_exec_size
from sandrun.spec.fields import (
    ENV_KEY_RE,
    GIT_WORD,
    INPUT_PATH,
    LABEL_KEY_RE,
    MAX_AFTER,
    NAME_RE,
    NOT_BLANK,
    PRIORITY_CLASSES,
    SHELL_WORDS,
    AfterEntry,
    Digest,
    Duration,
    InputRef,
    MemoryMB,
    ResultPath,
    also_accepts,
    env_values,
    git_word,
    priority_value,
)
from sandrun.spec.gpus import GPU_PATTERN, GpuRequest, parse_gpus
from sandrun.spec.policies import CheckpointPolicy, Limits, RetryPolicy, WarmPolicy
from sandrun.spec.rules import program_rules
from sandrun.spec.units import Int, Num, number_only


class Repository(Strict):
    """A git repository the agent checks out as the job's working directory."""

    # https://, ssh://, git@host:path or file://; then a branch, tag or commit.
    url: Annotated[str, git_word("url"), WithJsonSchema({"type": "string", "pattern": GIT_WORD})]
    ref: Annotated[
        str, git_word("ref"), WithJsonSchema({"type": "string", "pattern": GIT_WORD})
    ] = "main"


def _repository(value: object) -> object:
    return {"url": value} if isinstance(value, str) else value


def _retries(value: object) -> object:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return {"limit": value}
    return value


class JobSpec(Strict):
    """One job: exactly one of `command`, `shell` or `script`, plus resources and policy."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=program_rules)

    name: str | None = Field(default=None, json_schema_extra={"pattern": NAME_RE.pattern})
    command: list[str] | None = Field(
        default=None,
        json_schema_extra={"minItems": 1, "prefixItems": [{"type": "string", "minLength": 1}]},
    )
    shell: str | None = Field(default=None, json_schema_extra={"pattern": NOT_BLANK})
    script: str | None = Field(default=None, json_schema_extra={"pattern": NOT_BLANK})
    interpreter: str | None = Field(default=None, json_schema_extra={"pattern": SHELL_WORDS})
    env: Annotated[dict[str, str], BeforeValidator(env_values)] = Field(
        default_factory=dict,
        json_schema_extra={
            "propertyNames": {"pattern": ENV_KEY_RE.pattern},
            "additionalProperties": {"type": ["string", "number", "boolean"]},
        },
    )
    working_dir: str | None = Field(default=None, json_schema_extra={"pattern": "^/"})
    # What the agent puts in the job's scratch directory before the run: uploaded files,
    # an uploaded code bundle (.tar.gz), or a git checkout. All by content digest.
    inputs: dict[str, Digest] = Field(
        default_factory=dict, json_schema_extra={"propertyNames": {"pattern": INPUT_PATH}}
    )
    code: Digest | None = None
    repository: Annotated[Repository | None, BeforeValidator(_repository)] = Field(
        default=None, json_schema_extra=also_accepts({"type": "string", "pattern": GIT_WORD})
    )
    cpus: Num = Field(default=1.0, gt=0, le=1024)
    memory: MemoryMB | None = None
    gpus: Annotated[GpuRequest | None, BeforeValidator(parse_gpus)] = Field(
        default=None,
        json_schema_extra=also_accepts(
            {"type": "integer", "minimum": 0, "maximum": 64},
            {"type": "string", "pattern": GPU_PATTERN},
        ),
    )
    timeout: Duration | None = None
    network: StrictBool = False  # off: only a loopback of the job's own
    limits: Limits = Field(default_factory=Limits)
    warm: WarmPolicy = Field(default_factory=WarmPolicy)
    retries: Annotated[RetryPolicy, BeforeValidator(_retries)] = Field(
        default_factory=RetryPolicy,
        json_schema_extra=also_accepts({"type": "integer", "minimum": 0, "maximum": 100}),
    )
    outputs: list[str] = Field(
        default_factory=list,
        json_schema_extra={"items": {"type": "string", "pattern": r"^[^/\x00][^\x00]*$"}},
    )
    # A pattern that matches no file fails the job (output_error) instead of a warning.
    outputs_required: StrictBool = False
    labels: dict[str, str] = Field(
        default_factory=dict, json_schema_extra={"propertyNames": {"pattern": LABEL_KEY_RE.pattern}}
    )
    # Node labels the job must run on (`sandrun agent --label pool=gpu-east`).
    requires: dict[str, str] = Field(
        default_factory=dict, json_schema_extra={"propertyNames": {"pattern": LABEL_KEY_RE.pattern}}
    )
    priority: Annotated[
        Int,
        BeforeValidator(priority_value),
        PlainSerializer(int),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "integer", "minimum": -1000, "maximum": 1000},
                    {"enum": list(PRIORITY_CLASSES)},
                ]
            }
        ),
    ] = Field(default=0, ge=-1000, le=1000)
    # Jobs this one waits for: "ID" or "ID:ok|failed|any" (Slurm's afterok, afternotok,
    # afterany); it stays `waiting` until they end, and is `skipped` if the condition fails.
    after: list[AfterEntry] = Field(default_factory=list, max_length=MAX_AFTER)
    # A JSON file among its outputs whose value later steps read (`steps.NAME.result`).
    result: ResultPath | None = None
    # Inputs that are other jobs' outputs, {path: "JOB_ID:OUTPUT_PATH"}: the job waits for
    # those jobs (as `after` says, else until they complete) and gets the files by digest
    # when it is released, over any input of the same path.
    inputs_from: dict[str, InputRef] = Field(
        default_factory=dict,
        max_length=MAX_AFTER,
        json_schema_extra={"propertyNames": {"pattern": INPUT_PATH}},
    )

    # How it is asked to checkpoint, whether a pending job of higher priority may stop it
    # (then resumed, from its checkpoint if it saves one), and the job whose last
    # checkpoint its first attempt starts from (docs/lifecycle.md).
    checkpoint: CheckpointPolicy = Field(default_factory=CheckpointPolicy)
    preemptible: StrictBool = False
    restore_from: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")

    # Named volumes it mounts, and secrets it is given (docs/data.md).
    volumes: list[VolumeItem] = Field(
        default_factory=list, max_length=MAX_MOUNTS, json_schema_extra={"uniqueItems": True}
    )
    secrets: list[SecretItem] = Field(
        default_factory=list, max_length=MAX_MOUNTS, json_schema_extra={"uniqueItems": True}
    )
    data_mounts: list[DataMount] = Field(default_factory=list, max_length=MAX_MOUNTS)
    # Its Python packages, built by the agent with uv (or a named environment's name).
    environment: EnvironmentField = None

    # Run as replicas on nodes of distinct operators until k agree (docs/pool.md).
    consensus: Annotated[Consensus | None, BeforeValidator(parse_consensus)] = Field(
        default=None,
        json_schema_extra=also_accepts(
            {"type": "string", "pattern": CONSENSUS_PATTERN},
            {"type": "integer", "minimum": 1, "maximum": MAX_REPLICAS},
        ),
    )
    # USD: the most this job may hold in escrow (and so cost), when the pool prices jobs.
    max_price: Annotated[float, Field(ge=0, le=1_000_000), BeforeValidator(number_only)] | None = (
        None
    )

    @property
    def dependencies(self) -> list[tuple[str, str]]:
        """`after` as (job id, condition) pairs (`ok` unless given), then each job that
        `inputs_from` names and `after` does not (`ok`: its outputs exist once it completed)."""
        pairs = [(a.partition(":")[0], a.partition(":")[2] or "ok") for a in self.after]
        named = {job_id for job_id, _ in pairs}
        for ref in self.inputs_from.values():
            job_id = ref.partition(":")[0]
            if job_id not in named:
                pairs.append((job_id, "ok"))
                named.add(job_id)
        return pairs

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not NAME_RE.match(value):
            raise ValueError(f"name {value!r} is not valid; use 1-128 letters, digits, '-' or '_'")
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or not value[0]):
            raise ValueError("command must be a non-empty list: the program, then its arguments")
        return value

    @field_validator("shell", "script")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        if value is not None and not re.search(NOT_BLANK, value):
            raise ValueError("must not be empty")
        return value

    @field_validator("interpreter")
    @classmethod
    def _words(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(SHELL_WORDS, value):
            raise ValueError(
                f"{value!r} does not split into words: give a program and its arguments, "
                "with every quote closed"
            )
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not ENV_KEY_RE.match(key):
                raise ValueError(
                    f"environment variable name {key!r} is not valid; "
                    "use letters, digits and '_', not starting with a digit"
                )
        return value

    @field_validator("working_dir")
    @classmethod
    def _working_dir(cls, value: str | None) -> str | None:
        if value is not None and not PurePosixPath(value).is_absolute():
            raise ValueError(f"working_dir {value!r} must be an absolute path")
        return value

    @field_validator("inputs", "inputs_from")
    @classmethod
    def _inputs(cls, value: dict[str, str]) -> dict[str, str]:
        for path in value:
            _check_input_path(path)
        return value

    @field_validator("outputs")
    @classmethod
    def _outputs(cls, value: list[str]) -> list[str]:
        # A match that resolves outside the working directory is skipped at collection.
        for pattern in value:
            if not pattern or pattern.startswith("/"):
                raise ValueError(
                    f"output pattern {pattern!r} must be a glob relative to the working "
                    "directory, e.g. '*.pt' or 'results/**/*.csv'"
                )
        return value

    @field_validator("labels", "requires")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not LABEL_KEY_RE.match(key):
                raise ValueError(
                    f"label key {key!r} is not valid; use letters, digits, '_', '.', '/', '-'"
                )
        return value

    @model_validator(mode="before")
    @classmethod
    def _result_is_an_output(cls, data: Any) -> Any:
        # The declared result, and what replicas must agree on, are collected as outputs.
        if not isinstance(data, dict) or not isinstance(data.get("outputs", []), list):
            return data
        named = [data["result"]] if isinstance(data.get("result"), str) else []
        consensus = data.get("consensus")
        if isinstance(consensus, dict) and isinstance(consensus.get("agree_on"), list):
            named += [p for p in consensus["agree_on"] if isinstance(p, str)]
        outputs = data.get("outputs", [])
        missing = [p for p in dict.fromkeys(named) if p not in outputs]
        return {**data, "outputs": [*outputs, *missing]} if missing else data

    @model_validator(mode="after")
    def _one_program(self, info: ValidationInfo) -> JobSpec:
        given = [f for f in ("command", "shell", "script") if getattr(self, f) is not None]
        if len(given) != 1:
            what = "none" if not given else " and ".join(given)
            raise ValueError(f"give exactly one of command, shell or script (got {what})")
        if self.interpreter is not None and self.script is None:
            raise ValueError("interpreter is only used with script")
        if self.code is not None and self.repository is not None:
            raise ValueError("give code or repository, not both: each fills the working directory")
        if self.working_dir is not None:
            brought = [
                f for f in ("inputs", "inputs_from", "code", "repository") if getattr(self, f)
            ]
            if brought:
                raise ValueError(
                    f"{' and '.join(brought)} fill the job's own scratch directory; "
                    "drop working_dir (a directory on the node) to use them"
                )
        check_targets(self.volumes, self.secrets, self.data_mounts)
        if self.volumes and self.consensus is not None:
            raise ValueError("a consensus job cannot mount volumes: its replicas run apart")
        # Raised as InvalidSpec, not ValueError: pydantic passes it on, field named.
        program = "command" if self.command is not None else "shell" if self.shell else "script"
        if not is_stored(info):
            check_exec_size(self.argv(script_path="script"), self.env, program)
        return self

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        if self.command:
            base = PurePosixPath(self.command[0]).name
        else:
            base = "shell" if self.shell is not None else "script"
        return re.sub(r"[^A-Za-z0-9_-]", "_", base)[:128] or "job"

    def argv(self, script_path: str | None = None) -> list[str]:
        """The program to exec. A script is run from `script_path`, written by the agent."""
        if self.command is not None:
            return list(self.command)
        if self.shell is not None:
            return ["/bin/sh", "-c", self.shell]
        if script_path is None:
            raise ValueError("a script job needs the path its script was written to")
        return [*shlex.split(self.interpreter or "python3"), script_path]

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_defaults=True)


def _check_input_path(path: str) -> None:
    parts = PurePosixPath(path).parts
    if not path or path.startswith("/") or ".." in parts or path.endswith("/"):
        raise ValueError(
            f"input path {path!r} must be a file path relative to the working "
            "directory, e.g. 'data/config.json', without '..'"
        )
