"""Where a pending job may preempt: the node on which stopping the fewest preemptible jobs
of lower priority (lowest first, newest first) makes room, and never where it fits free."""

from __future__ import annotations

from sandrun.models import Capacity, JobRecord, NodeInfo
from sandrun.service.preemption import plan
from sandrun.spec import parse_spec
from sandrun.store.preemption import Running


def _job(cpus: float, priority: int = 0, **more: object) -> JobRecord:
    spec = parse_spec({"command": ["true"], "cpus": cpus, "priority": priority, **more})
    return JobRecord.submitted(spec, "me", 0.0)


def _node(name: str, cpus: float, used: float, **more: object) -> NodeInfo:
    return NodeInfo(
        id=name,
        name=name,
        capacity=Capacity(cpus=cpus, memory_mb=8192),
        state=str(more.get("state", "active")),
        started_at=0.0,
        heartbeat_at=0.0,
        used_cpus=used,
        labels=dict(more.get("labels", {})),  # type: ignore[call-overload]
    )


def _on(node: str, *cpus: float) -> list[Running]:
    return [Running(_job(c, preemptible=True), 1, node) for c in cpus]


def test_the_node_needing_the_fewest_stopped_is_chosen() -> None:
    big = _job(4, priority=10)
    nodes = [_node("a", 4, 4), _node("b", 4, 4)]
    running = _on("a", 1, 1, 1, 1) + _on("b", 2, 2)
    node, victims = plan(big, nodes, running) or (None, [])
    assert node is not None and node.name == "b" and len(victims) == 2
    # Only as many as make room: 2 CPUs free on a, so 2 of its 1-CPU jobs do.
    node, victims = plan(_job(4, priority=10), [_node("a", 4, 2)], _on("a", 1, 1)) or (None, [])
    assert node is not None and [v.job.spec.cpus for v in victims] == [1, 1]


def test_no_one_is_stopped_for_a_job_that_fits_free_room_or_no_node() -> None:
    nodes = [_node("a", 4, 4), _node("b", 4, 1)]
    assert plan(_job(2, priority=10), nodes, _on("a", 4)) is None  # b has room now
    assert plan(_job(8, priority=10), nodes, _on("a", 4)) is None  # no node holds 8
    # Not enough to stop on the one node it could use.
    assert plan(_job(4, priority=10), [_node("a", 4, 4)], _on("a", 2)) is None


def test_a_node_it_may_not_run_on_is_never_emptied_for_it() -> None:
    picky = _job(2, priority=10, requires={"pool": "gpu"})
    nodes = [_node("a", 4, 4, labels={"pool": "cpu"}), _node("lost", 4, 4, state="lost")]
    assert plan(picky, nodes, _on("a", 4) + _on("lost", 4)) is None
