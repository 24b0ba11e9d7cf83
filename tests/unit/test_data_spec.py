"""What a job may ask of its data, checked at submit: volumes and secrets by name, where
they appear inside the sandbox, data mount sources, environments and their requirements."""

from __future__ import annotations

import pytest

from sandrun.errors import InvalidSpec
from sandrun.spec import parse_spec
from sandrun.spec.environment import environment_fields, requirements_of


def _spec(**fields: object) -> object:
    return parse_spec({"shell": "true", **fields})


def test_the_shapes_users_write_are_taken() -> None:
    spec = parse_spec(
        {
            "shell": "true",
            "volumes": ["data", {"name": "ckpt", "mount_path": "/ckpt", "read_only": True}],
            "secrets": ["API_KEY", {"name": "K", "file": "/run/secrets/k"}],
            "data_mounts": [
                {"source": "https://example.com/train.tar", "target": "/train"},
                {"source": "s3://bucket/prefix", "target": "/s3"},
                {"source": "artifact:sha256:" + "a" * 64, "target": "/blob"},
            ],
            "environment": {"python": "3.12", "requirements": ["torch==2.5", "numpy"]},
        }
    )
    assert [v.target(v.name or "") for v in spec.volumes] == ["/volumes/data", "/ckpt"]
    assert [(s.env_name, s.file) for s in spec.secrets] == [
        ("API_KEY", None),
        (None, "/run/secrets/k"),
    ]
    assert [m.unpacks for m in spec.data_mounts] == [True, False, False]
    assert spec.data_mounts[2].digest == "a" * 64
    assert _spec(environment="ml").environment == "ml"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"volumes": [{"name": "a", "mount_path": "/usr/lib/x"}]}, "volumes.0"),
        ({"volumes": [{"name": "a", "mount_path": "/a/../etc"}]}, "volumes.0"),
        ({"volumes": [{}]}, "volumes.0"),
        ({"volumes": [{"name": "a", "volume_id": "vol-x"}]}, "volumes.0"),
        ({"volumes": ["a", {"name": "b", "mount_path": "/volumes/a/b"}]}, None),
        ({"secrets": [{"name": "K", "file": "/proc/1/environ"}]}, "secrets.0"),
        ({"secrets": ["1BAD"]}, "secrets.0"),
        ({"data_mounts": [{"source": "file:///etc/passwd", "target": "/d"}]}, "data_mounts.0"),
        ({"data_mounts": [{"source": "https://x/y", "target": "/dev/x"}]}, "data_mounts.0"),
        ({"environment": {"python": "2.7"}}, "environment"),
        ({"environment": {"requirements": ["-r /etc/shadow"]}}, "environment"),
        ({"environment": {"requirements": ["x @ file:///etc/passwd"]}}, "environment"),
        ({"environment": {"file": "../requirements.txt"}}, "environment"),
        ({"environment": {"file": "setup.py"}}, "environment"),
        ({"environment": "no spaces"}, "environment"),
        ({"volumes": ["a"], "consensus": "2-of-3"}, None),
    ],
)
def test_bad_data_is_refused_naming_the_field(fields: dict[str, object], field: str | None) -> None:
    with pytest.raises(InvalidSpec) as refused:
        _spec(**fields)
    if field is not None:
        assert (refused.value.field or "").startswith(field), refused.value


def test_requirement_files_are_read_as_the_spec_s_requirements() -> None:
    assert requirements_of("# pinned\nsix==1.16.0  # why\n\nnumpy\n", "requirements.txt") == [
        "six==1.16.0",
        "numpy",
    ]
    pyproject = '[project]\nname = "x"\ndependencies = ["six>=1", "attrs"]\n'
    assert requirements_of(pyproject, "pyproject.toml") == ["six>=1", "attrs"]
    with pytest.raises(ValueError, match="package specifier"):
        requirements_of("--extra-index-url http://evil/\n", "requirements.txt")


def test_sdk_shorthands_become_the_environment() -> None:
    assert environment_fields({"requirements": ["six"], "python": "3.12"})["environment"] == {
        "requirements": ["six"],
        "python": "3.12",
    }
    assert environment_fields({"image": "ml"})["environment"] == "ml"
    with pytest.raises(InvalidSpec, match="container") as container:
        environment_fields({"image": "pytorch/pytorch:2.5-cuda12"})
    assert container.value.field == "image"
    with pytest.raises(InvalidSpec, match="one of"):
        environment_fields({"image": "ml", "requirements": ["six"]})


def test_task_config_takes_volume_and_secret_specs() -> None:
    from sandrun.client.task import SecretSpec, TaskConfig, VolumeSpec, to_spec

    config = TaskConfig(
        command="python train.py",
        volumes=[VolumeSpec(name="ckpt", mount_path="/ckpt"), VolumeSpec(volume_id="vol-1")],
        secrets=[SecretSpec(name="API_KEY")],
    )
    spec, _ = to_spec(config, {"upload_code": False})
    assert [(v.name, v.volume_id, v.mount_path) for v in spec.volumes] == [
        ("ckpt", None, "/ckpt"),
        (None, "vol-1", None),
    ]
    assert [s.name for s in spec.secrets] == ["API_KEY"]
