from __future__ import annotations

import re
from pathlib import Path

import pytest

from sandrun.errors import InvalidSpec
from sandrun.service.maxima import over
from sandrun.spec import JobSpec, load_spec_file, parse_duration, parse_memory_mb, parse_spec
from sandrun.spec.policy import JobMaxima
from sandrun.spec.units import MEMORY_PATTERN


@pytest.mark.parametrize(
    ("text", "mib"),
    [
        ("512MB", 512),
        ("8GB", 8192),
        ("8G", 8192),
        ("1.5GiB", 1536),
        ("2048", 1),
        (256, 256),
        ("1TB", 1024 * 1024),
        ("64k", 1),
        ("10737418240", 10240),  # bytes, as Kubernetes writes them
        ("999999999T", 999999999 << 20),
        (2**50, 2**50),
    ],
)
def test_memory_sizes(text: object, mib: int) -> None:
    assert parse_memory_mb(text) == mib


@pytest.mark.parametrize(
    "bad", ["lots", "-1GB", "8 XB", 0, True, 2**50 + 1, "1000000000T", "94790465003551436308480"]
)
def test_memory_refuses_nonsense(bad: object) -> None:
    """Sizes past any machine too: the store's integers could not hold some of them."""
    with pytest.raises(ValueError):
        parse_memory_mb(bad)


@pytest.mark.parametrize("text", ["1000000000T", "94790465003551436308480", "999999999T"])
def test_the_published_pattern_admits_exactly_the_sizes_accepted(text: str) -> None:
    accepted = True
    try:
        parse_memory_mb(text)
    except ValueError:
        accepted = False
    assert bool(re.fullmatch(MEMORY_PATTERN, text)) is accepted


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        (90, 90),
        ("90s", 90),
        ("30m", 1800),
        ("2h", 7200),
        ("1h30m", 5400),
        ("1d", 86400),
        ("0.5", 0.5),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["soon", "2 weeks", "-5", 0, "1h junk"])
def test_duration_refuses_nonsense(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_full_spec_parses_every_field() -> None:
    spec = parse_spec(
        {
            "name": "train-1",
            "shell": "python3 train.py",
            "env": {"PORT": 8080, "DEBUG": True},
            "working_dir": "/srv/app",
            "cpus": 2,
            "memory": "8GB",
            "gpus": "4xa100",
            "timeout": "2h",
            "retries": {
                "limit": 3,
                "backoff": "2s",
                "max_backoff": "1m",
                "on": ["exit_code"],
                "no_retry_exit_codes": [2],
            },
            "outputs": ["*.pt", "results/**/*.csv"],
            "labels": {"team": "vision"},
            "priority": "high",
        }
    )
    assert spec.memory == 8192 and spec.timeout == 7200 and spec.cpus == 2
    assert spec.gpus is not None and (spec.gpus.count, spec.gpus.type) == (4, "a100")
    assert spec.env == {"PORT": "8080", "DEBUG": "true"}
    assert spec.retries.limit == 3 and spec.retries.max_attempts == 4
    assert spec.retries.no_retry_exit_codes == {2}
    assert spec.priority == 10
    assert spec.argv() == ["/bin/sh", "-c", "python3 train.py"]
    # The JSON form round-trips to the same spec (this is what the store keeps).
    assert parse_spec(spec.to_json_dict()) == spec


def test_retry_backoff_is_exponential_and_capped() -> None:
    policy = parse_spec(
        {"command": ["x"], "retries": {"limit": 9, "backoff": 1, "max_backoff": 5}}
    ).retries
    assert [policy.delay(n) for n in range(1, 6)] == [1, 2, 4, 5, 5]


def test_retries_shorthand_is_the_number_of_retries() -> None:
    assert parse_spec({"command": ["x"], "retries": 2}).retries.max_attempts == 3


def test_unknown_field_names_it_and_suggests_the_closest() -> None:
    with pytest.raises(InvalidSpec) as info:
        parse_spec({"comand": ["echo"], "timeout": 5})
    assert info.value.field == "comand"
    assert info.value.suggestions[0].startswith("did you mean 'command'")


def test_unknown_nested_field_is_named_with_its_path() -> None:
    with pytest.raises(InvalidSpec) as info:
        parse_spec({"command": ["echo"], "retries": {"limt": 2}})
    assert info.value.field == "retries.limt"
    assert "did you mean 'limit'?" in info.value.suggestions


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({}, None, "exactly one of command, shell or script"),
        ({"command": ["a"], "shell": "b"}, None, "command and shell"),
        ({"command": []}, "command", "non-empty"),
        ({"command": ["a"], "timeout": -1}, "timeout", "greater than zero"),
        ({"command": ["a"], "name": "has space"}, "name", "letters, digits"),
        ({"command": ["a"], "memory": "lots"}, "memory", "'512MB'"),
        ({"command": ["a"], "outputs": ["/etc/passwd"]}, "outputs", "relative"),
        ({"command": ["a"], "working_dir": "rel/dir"}, "working_dir", "absolute"),
        ({"command": ["a"], "env": {"1BAD": "x"}}, "env", "environment variable name"),
        ({"command": ["a"], "priority": "urgent"}, "priority", "low, normal, high"),
        ({"command": ["a"], "cpus": 0}, "cpus", "greater than 0"),
        ({"shell": "a", "interpreter": "bash"}, None, "only used with script"),
        ({"script": "a", "interpreter": "'python3 -u"}, "interpreter", "every quote closed"),
        ({"script": "a", "interpreter": "python3\\"}, "interpreter", "does not split"),
    ],
)
def test_bad_specs_say_what_is_wrong(
    data: dict[str, object], field: str | None, words: str
) -> None:
    with pytest.raises(InvalidSpec) as info:
        parse_spec(data)
    assert info.value.field == field
    assert words in str(info.value)


def test_script_runs_through_its_interpreter() -> None:
    spec = JobSpec(script="console.log(1)", interpreter="node --no-warnings")
    assert spec.argv("/run/script") == ["node", "--no-warnings", "/run/script"]
    quoted = JobSpec(script="x", interpreter="'/opt/my tools/py' -u")
    assert quoted.argv("/s") == ["/opt/my tools/py", "-u", "/s"]
    assert JobSpec(script="print(1)").argv("/s") == ["python3", "/s"]


def test_display_name_comes_from_the_program() -> None:
    assert JobSpec(command=["/usr/bin/python3", "x.py"]).display_name == "python3"
    assert JobSpec(shell="echo hi").display_name == "shell"
    assert JobSpec(name="mine", shell="echo").display_name == "mine"


def test_yaml_file_errors_give_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "job.yaml"
    bad.write_text("command: [echo\nname: x\n")
    with pytest.raises(InvalidSpec, match=r"not valid YAML at line \d+"):
        load_spec_file(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(InvalidSpec, match="is empty"):
        load_spec_file(empty)
    with pytest.raises(InvalidSpec, match="cannot read"):
        load_spec_file(tmp_path / "missing.yaml")


def test_yaml_file_parses(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("name: hello\ncommand: [echo, hi]\ntimeout: 30s\nretries: 1\n")
    spec = load_spec_file(path)
    assert (spec.name, spec.command, spec.timeout, spec.retries.limit) == (
        "hello",
        ["echo", "hi"],
        30,
        1,
    )


def test_the_operators_maxima_name_each_ask_over_them() -> None:
    spec = JobSpec.model_validate({"shell": "true", "memory": "8GB", "limits": {"disk": "2TB"}})
    found = {field: (asked, most) for field, asked, most, _ in over(spec, JobMaxima(disk=1024))}
    assert found == {"limits.disk": (2 * 1024 * 1024, 1024)}


def test_an_unknown_key_holding_a_nul_is_named_escaped() -> None:
    """The error names the key, and no text the API answers holds a NUL."""
    with pytest.raises(InvalidSpec) as caught:
        parse_spec({"command": ["x"], "a\u0000b": 1})
    assert caught.value.field == "a\\0b"
    assert "\u0000" not in caught.value.message


@pytest.mark.parametrize(
    ("warm", "field"),
    [
        ({"min_workers": 9}, "warm.min_workers"),
        ({"min_workers": -1}, "warm.min_workers"),
        ({"idle_timeout": "soon"}, "warm.idle_timeout"),
        ({"min_worker": 2}, "warm.min_worker"),
    ],
)
def test_a_bad_warm_policy_is_refused_naming_its_field(warm: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidSpec) as refused:
        parse_spec({"shell": "true", "warm": warm})
    assert refused.value.field == field
