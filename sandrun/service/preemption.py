"""Where a pending job of higher priority may preempt, as a pure function: the node on
which stopping the fewest preemptible jobs of lower priority makes room for it."""

from __future__ import annotations

from collections.abc import Sequence

from sandrun.models import Capacity, JobRecord, NodeInfo
from sandrun.service import placement
from sandrun.store.preemption import Running


def free_room(node: NodeInfo) -> Capacity:
    """What a node has free now: its capacity less what its live attempts hold."""
    used = Capacity(cpus=node.used_cpus, memory_mb=node.used_memory_mb, gpus=node.used_gpus)
    return node.capacity.minus(used)


def plan(
    job: JobRecord, nodes: Sequence[NodeInfo], running: Sequence[Running]
) -> tuple[NodeInfo, list[Running]] | None:
    """The active node and the jobs of `running` on it (taken in the order given: the
    lowest priority, then the newest, first) whose room, with its free room, holds `job`;
    the node needing the fewest. None where `job` fits some node's free room already (it
    needs no one stopped) or no node could be emptied enough."""
    spec = job.spec
    live = [n for n in nodes if n.state == "active"]
    if any(placement.fits(spec, free_room(n), n.labels) for n in live):
        return None
    best: tuple[NodeInfo, list[Running]] | None = None
    for node in live:
        if not placement.fits(spec, node.capacity, node.labels):
            continue
        room, chosen = free_room(node), []
        for victim in (r for r in running if r.node == node.id):
            if placement.fits(spec, room, node.labels):
                break
            room = room.plus(node.capacity.share(victim.job.spec))
            chosen.append(victim)
        if placement.fits(spec, room, node.labels) and (best is None or len(chosen) < len(best[1])):
            best = (node, chosen)
    return best
