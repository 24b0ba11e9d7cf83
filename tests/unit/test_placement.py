"""Placement decisions as pure functions: fit, why a job waits, instance offers."""

from __future__ import annotations

from sandrun.models import Capacity, NodeInfo
from sandrun.service.placement import fits, instances, why_pending
from sandrun.spec import parse_spec

A100S = Capacity(cpus=16, memory_mb=64 << 10, gpus=2, gpu_type="a100", gpu_memory_gb=80)
CPU = Capacity(cpus=4, memory_mb=8 << 10)


def _node(name: str, capacity: Capacity, state: str = "active") -> NodeInfo:
    return NodeInfo(
        id=name, name=name, capacity=capacity, state=state, started_at=0, heartbeat_at=0
    )


def test_fit_is_count_model_memory_cpus_and_ram() -> None:
    assert fits(parse_spec({"shell": "x", "gpus": "2xa100"}), A100S)
    assert not fits(parse_spec({"shell": "x", "gpus": "3xa100"}), A100S)
    assert not fits(parse_spec({"shell": "x", "gpus": "h100"}), A100S)
    assert not fits(parse_spec({"shell": "x", "gpus": {"count": 1, "memory_gb": 96}}), A100S)
    assert not fits(parse_spec({"shell": "x", "gpus": 1}), CPU)
    assert fits(parse_spec({"shell": "x", "cpus": 4, "memory": "8GB"}), CPU)
    assert not fits(parse_spec({"shell": "x", "memory": "9GB"}), CPU)


def test_why_a_job_waits() -> None:
    spec = parse_spec({"shell": "x", "gpus": "8xh100"})
    assert why_pending(spec, []) == "no agent is connected"
    assert why_pending(spec, [_node("gone", A100S, "lost")]) == "no agent is connected"
    said = why_pending(spec, [_node("cpu-1", CPU), _node("gpu-1", A100S)])
    assert said == (
        "fits no registered node: needs 1 CPUs, 8xh100; the largest node (gpu-1) has "
        "16 CPUs, 64 GiB, 2xa100 (80 GB)"
    )
    small = parse_spec({"shell": "x", "gpus": "a100"})
    assert "waiting for room on a node that can hold it (gpu-1)" in why_pending(
        small, [_node("cpu-1", CPU), _node("gpu-1", A100S)]
    )


def test_instances_the_pool_offers() -> None:
    pool = [_node("g1", A100S), _node("g2", A100S), _node("c", CPU), _node("x", A100S, "lost")]
    offers = instances(pool)
    assert [(i.name, i.nodes) for i in offers] == [("1xa100-80gb", 2), ("2xa100-80gb", 2)]
    assert offers[1].price_per_hour == 2 * offers[0].price_per_hour
    assert instances(pool, min_gpu_memory_gb=96) == []
    assert [i.name for i in instances(pool, max_price=offers[0].price_per_hour)] == ["1xa100-80gb"]


def test_required_labels_must_all_match() -> None:
    spec = parse_spec({"shell": "x", "requires": {"pool": "east", "zone": "a"}})
    assert fits(spec, CPU, {"pool": "east", "zone": "a", "extra": "1"})
    assert not fits(spec, CPU, {"pool": "east"})
    assert not fits(spec, CPU, {"pool": "west", "zone": "a"})
