"""The GPU catalogue, GPU requests, declared and detected GPUs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sandrun.agent.gpus import detect_gpus, model_of
from sandrun.errors import InvalidSpec, ValidationError
from sandrun.spec import parse_spec
from sandrun.spec.gpus import GPU_PATTERN, canonical, catalogue, declared_gpus, spellings


@pytest.mark.parametrize(
    ("text", "model", "memory"),
    [
        ("a100", "a100", None),
        ("A100-80GB", "a100", 80),
        ("a100_40gb", "a100", 40),
        ("nvidia-a100-sxm4-80gb", "a100", 80),
        ("h100-sxm", "h100", None),
        ("4090", "rtx4090", None),
    ],
)
def test_gpu_names_and_their_variants(text: str, model: str, memory: float | None) -> None:
    assert canonical(text) == (model, memory)


def test_an_unknown_gpu_or_variant_names_the_valid_ones() -> None:
    with pytest.raises(InvalidSpec, match=r"'a1000' is not one sandrun knows; did you mean a100"):
        parse_spec({"shell": "x", "gpus": "4xa1000"})
    with pytest.raises(InvalidSpec, match="a100 GPUs have 40 or 80 GB, not 20"):
        parse_spec({"shell": "x", "gpus": "a100-20gb"})


def test_a_request_naming_a_variant_asks_for_its_memory() -> None:
    spec = parse_spec({"shell": "x", "gpus": "4xa100-80gb"})
    assert (spec.gpus.count, spec.gpus.type, spec.gpus.memory_gb) == (4, "a100", 80)  # type: ignore[union-attr]


def test_every_catalogue_entry_is_whole() -> None:
    for model in catalogue().values():
        assert model.memory_gb and model.price_per_hour > 0


def test_declared_gpus() -> None:
    assert declared_gpus("2xa100-80gb") == {"gpus": 2, "gpu_type": "a100", "gpu_memory_gb": 80}
    assert declared_gpus("h200")["gpu_memory_gb"] == 141
    assert declared_gpus("0")["gpus"] == 0
    with pytest.raises(ValidationError, match="must name the model"):
        declared_gpus("3")


def test_products_map_to_catalogue_models() -> None:
    assert model_of("NVIDIA A100-SXM4-80GB") == "a100"
    assert model_of("Tesla T4") == "t4"
    assert model_of("NVIDIA GeForce RTX 4090") == "rtx4090"
    assert model_of("Quadro Mystery 9") == "quadro-mystery-9"


def test_detection_reads_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\nprintf 'NVIDIA A100-SXM4-80GB, 81920\\nNVIDIA A100-SXM4-80GB, 81920\\n'\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert detect_gpus() == (2, "a100", 80)
    fake.write_text("#!/bin/sh\nexit 9\n")  # a driver that does not answer: no GPUs
    assert detect_gpus() == (0, None, 0.0)


def test_every_gpu_name_the_schema_publishes_is_accepted() -> None:
    plain, sized = spellings()
    assert "a10g" in plain and "a100-80gb" in sized
    for name in plain + sized:
        forms: list[object] = [{"count": 2, "type": name}]
        if name in plain:
            forms.append({"count": 2, "type": [name, "h100"]})
        if re.match(GPU_PATTERN, f"2x{name}"):
            forms.append(f"2x{name}")
        for form in forms:
            parse_spec({"shell": "x", "gpus": form})  # raises if refused
    assert canonical("a10g") == ("a10g", None)  # a model, not "a" with 10 GB
