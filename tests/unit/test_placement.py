"""Placement decisions as pure functions: fit, why a job waits, instance offers, the
claim order, backfill room, and the policy file that shapes them."""

from __future__ import annotations

import pytest

from sandrun.errors import InvalidSpec
from sandrun.models import Capacity, NodeInfo
from sandrun.service.placement import fits, instances, why_pending
from sandrun.spec import parse_spec
from sandrun.spec.policy import OwnerLimits, Policy, parse_policy
from sandrun.store.queue import Head, Load, backfill_room, fair_order

PRICE = Policy().price_per_gpu_hour

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
    offers = instances(pool, PRICE)
    assert [(i.name, i.nodes) for i in offers] == [("1xa100-80gb", 2), ("2xa100-80gb", 2)]
    assert offers[1].price_per_hour == 2 * offers[0].price_per_hour
    assert instances(pool, PRICE, min_gpu_memory_gb=96) == []
    assert [i.name for i in instances(pool, PRICE, max_price=offers[0].price_per_hour)] == [
        "1xa100-80gb"
    ]


def test_required_labels_must_all_match() -> None:
    spec = parse_spec({"shell": "x", "requires": {"pool": "east", "zone": "a"}})
    assert fits(spec, CPU, {"pool": "east", "zone": "a", "extra": "1"})
    assert not fits(spec, CPU, {"pool": "east"})
    assert not fits(spec, CPU, {"pool": "west", "zone": "a"})


def test_why_a_job_waits_for_its_owner_or_its_reservation() -> None:
    nodes = [_node("gpu-1", A100S)]
    one = parse_spec({"shell": "x", "gpus": "a100"})
    limits = OwnerLimits(max_running_jobs=3, max_gpus=2)
    at_jobs = why_pending(one, nodes, owner="bob", limits=limits, held=(3, 0))
    assert at_jobs.startswith("bob runs 3 jobs") and "max_running_jobs 3" in at_jobs
    at_gpus = why_pending(one, nodes, owner="bob", limits=limits, held=(2, 2))
    assert at_gpus.startswith("bob holds 2 of the 2 GPUs") and "needs 1" in at_gpus
    kept = why_pending(one, nodes, owner="bob", limits=limits, held=(1, 1), reserved_on="gpu-1")
    assert kept.startswith("next in line: node gpu-1 is kept for it")


def test_fair_order_is_priority_then_dominant_share_then_age() -> None:
    def head(owner: str, priority: int = 0, at: float = 0.0) -> Head:
        return Head(f"{owner}{at}", owner, priority, at, 1, 0, 0, None, None, None)

    pool = Load(0, cpus=100, memory_mb=1000, gpus=10)
    loads = {"gpu-user": Load(1, cpus=1, gpus=5), "cpu-user": Load(9, cpus=40)}
    heads = [head("gpu-user", at=1), head("cpu-user", at=2), head("new", at=3)]
    # the GPU user holds half the GPUs, more than the CPU user's 40% of the CPUs
    assert [h.owner for h in fair_order(heads, loads, pool)] == ["new", "cpu-user", "gpu-user"]
    heads.append(head("gpu-user", priority=10, at=4))
    assert fair_order(heads, loads, pool)[0].priority == 10


def test_backfill_leaves_room_for_the_reserved_job() -> None:
    big = Head("big", "bob", 0, 0.0, 2, 1024, 2, "n", 0.0, 0.0)
    free = A100S.model_copy(update={"cpus": 15, "gpus": 1})  # a 1-GPU job runs
    room = backfill_room(A100S, free, big, Load())
    assert (room.cpus, room.memory_mb, room.gpus) == (14, (64 << 10) - 1024, 0)
    after = backfill_room(A100S, free, big, Load(1, cpus=10, memory_mb=0, gpus=0))
    assert after.cpus == 4


def test_policy_files_are_checked_field_by_field() -> None:
    policy = parse_policy(
        {
            "limits": {"default": {"max_gpus": 8}, "alice": {"max_running_jobs": 2}},
            "prices": {"A100-80GB": 1.25},
            "reserve_after": 30,
        }
    )
    assert policy.limits_for("alice") == OwnerLimits(max_running_jobs=2)
    assert policy.limits_for("zed") == OwnerLimits(max_gpus=8)
    assert policy.price_per_gpu_hour("a100") == 1.25
    assert policy.price_per_gpu_hour("t4") == 0.35  # the catalogue's
    for bad, field in (
        ({"limits": {"alice": {"max_gpu": 1}}}, "limits.alice.max_gpu"),
        ({"limits": {"alice": {"max_gpus": -1}}}, "limits.alice.max_gpus"),
        ({"prices": {"a1000": 1}}, "prices"),
        ({"reserve_after": "soon"}, "reserve_after"),
        ({"limit": {}}, "limit"),
    ):
        with pytest.raises(InvalidSpec) as caught:
            parse_policy(bad)
        assert caught.value.field == field, caught.value.message
    with pytest.raises(InvalidSpec, match="did you mean a100"):
        parse_policy({"prices": {"a1000": 1}})


def test_a_list_of_models_fits_any_of_them() -> None:
    spec = parse_spec({"shell": "x", "gpus": {"count": 2, "type": ["h100", "A100-80GB"]}})
    assert spec.gpus is not None and spec.gpus.types == ("h100", "a100")
    assert spec.gpus.memory_gb == 80
    assert fits(spec, A100S)
    assert not fits(spec, A100S.model_copy(update={"gpu_type": "l40s"}))
    assert "2xh100/a100 (80 GB)" in why_pending(spec, [_node("cpu-1", CPU)])
    for bad, said in (
        ({"count": 1, "type": []}, "name at least one model"),
        ({"count": 1, "type": ["a100-40gb", "a100-80gb"]}, "40 GB and 80 GB"),
        ("2xa100,a1000", "did you mean a100"),
    ):
        with pytest.raises(InvalidSpec, match=said):
            parse_spec({"shell": "x", "gpus": bad})
