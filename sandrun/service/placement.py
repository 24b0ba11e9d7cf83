"""Where jobs can run: whether a job fits a node, why a pending job waits, and which GPU
instance types the pool offers. Pure functions over specs and node records."""

from __future__ import annotations

from collections.abc import Callable

from sandrun.models import Capacity, Instance, NodeInfo
from sandrun.spec import JobSpec
from sandrun.spec.consensus import Consensus
from sandrun.spec.data import NODE_LABEL
from sandrun.spec.policy import OwnerLimits
from sandrun.states import JobState


def fits(spec: JobSpec, capacity: Capacity, labels: dict[str, str] | None = None) -> bool:
    """Whether `spec` could run on a node of this capacity (all of it free) and labels.
    The store's claim states the same rule in SQL (`fragment_fits` in
    store/sql/<dialect>/queries.sql); tests/contract/test_fit.py checks they agree."""
    want = spec.gpus
    if not capacity.holds(spec.cpus, spec.memory or 0, want.count if want else 0):
        return False
    if any((labels or {}).get(key) != value for key, value in spec.requires.items()):
        return False
    return want is None or (
        (not want.types or capacity.gpu_type in want.types)
        and (want.memory_gb or 0) <= capacity.gpu_memory_gb
    )


def needs(spec: JobSpec) -> str:
    parts = [f"{spec.cpus:g} CPUs"]
    if spec.memory:
        parts.append(f"{spec.memory / 1024:g} GiB")
    if spec.gpus:
        gpu = f"{spec.gpus.count}x{'/'.join(spec.gpus.types) or 'GPU'}"
        if spec.gpus.memory_gb:
            gpu += f" ({spec.gpus.memory_gb:g} GB)"
        parts.append(gpu)
    parts += [f"{key}={value}" for key, value in spec.requires.items()]
    return ", ".join(parts)


def has(capacity: Capacity) -> str:
    parts = [f"{capacity.cpus:g} CPUs", f"{capacity.memory_mb / 1024:.0f} GiB"]
    if capacity.gpus:
        parts.append(f"{capacity.gpus}x{capacity.gpu_type} ({capacity.gpu_memory_gb:g} GB)")
    return ", ".join(parts)


def why_pending(
    spec: JobSpec,
    nodes: list[NodeInfo],
    *,
    owner: str = "",
    limits: OwnerLimits | None = None,
    held: tuple[int, int] | None = None,
    reserved_on: str | None = None,
    pinned: tuple[str, str] | None = None,
) -> str:
    """Why a pending job has not started, in words for `sandrun status`. `held`: the jobs
    and GPUs its owner runs now, counted against `limits`; `reserved_on`: the node keeping
    itself free for the job; `pinned`: (volume, node) — the node holding a volume it mounts."""
    live = [n for n in nodes if n.state == "active"]
    placed = spec  # with the volume's node among its requirements
    if pinned is not None:
        volume, node = pinned
        placed = spec.model_copy(update={"requires": {**spec.requires, NODE_LABEL: node}})
        if not any(n.name == node for n in live):
            return (
                f"its volume {volume!r} lives on node {node}, which is not connected; "
                "it starts when that node's agent is back"
            )
    if not live:
        return "no agent is connected"
    able = [n for n in live if fits(placed, n.capacity, n.labels)]
    if not able and pinned is not None:
        holder = next(n for n in live if n.name == pinned[1])
        return (
            f"its volume {pinned[0]!r} lives on node {holder.name}, which cannot hold it: "
            f"needs {needs(spec)}; {holder.name} has {has(holder.capacity)}"
        )
    if not able:
        biggest = max(live, key=lambda n: (n.capacity.gpus, n.capacity.cpus, n.capacity.memory_mb))
        return (
            f"fits no registered node: needs {needs(spec)}; the largest node "
            f"({biggest.name}) has {has(biggest.capacity)}"
        )
    if limits is not None and held is not None:
        jobs, gpus = held
        if limits.max_running_jobs is not None and jobs >= limits.max_running_jobs:
            return (
                f"{owner} runs {jobs} jobs, as many as this server lets one owner run "
                f"(max_running_jobs {limits.max_running_jobs}); it starts as they end"
            )
        want = spec.gpus.count if spec.gpus else 0
        if want and limits.max_gpus is not None and gpus + want > limits.max_gpus:
            return (
                f"{owner} holds {gpus} of the {limits.max_gpus} GPUs this server lets one "
                f"owner hold (max_gpus) and this job needs {want}; it starts as they free"
            )
    if reserved_on is not None:
        name = next((n.name for n in nodes if n.id == reserved_on), reserved_on)
        return (
            f"next in line: node {name} is kept for it and takes nothing that would delay "
            "it; it starts when the jobs running there end (or sooner on a node with room)"
        )
    names = ", ".join(sorted({n.name for n in able})[:5])
    return f"waiting for room on a node that can hold it ({names}); jobs ahead of it come first"


def instances(
    nodes: list[NodeInfo],
    price_per_gpu_hour: Callable[[str], float],
    min_gpu_memory_gb: float = 0,
    max_price: float | None = None,
) -> list[Instance]:
    """The GPU instance types active nodes offer, cheapest first."""
    found: dict[str, Instance] = {}
    for node in nodes:
        cap = node.capacity
        if node.state != "active" or not cap.gpus or cap.gpu_type is None:
            continue
        if cap.gpu_memory_gb < min_gpu_memory_gb:
            continue
        per_gpu = price_per_gpu_hour(cap.gpu_type)
        for count in range(1, cap.gpus + 1):
            name = f"{count}x{cap.gpu_type}-{cap.gpu_memory_gb:g}gb"
            price = round(per_gpu * count, 4)
            if max_price is not None and price > max_price:
                continue
            known = found.get(name)
            found[name] = Instance(
                name=name,
                gpu_type=cap.gpu_type,
                gpu_count=count,
                gpu_memory_gb=cap.gpu_memory_gb,
                price_per_hour=price,
                nodes=(known.nodes if known else 0) + 1,
            )
    return sorted(found.values(), key=lambda i: (i.price_per_hour, i.name))


def why_waiting(
    dependencies: list[tuple[str, str, str, str]], consensus: Consensus | None = None
) -> str:
    """Why a waiting job waits: the jobs it still waits for ((id, name, state, condition)),
    or, a job with `consensus`, its replicas."""
    open_ = [(i, n, s) for i, n, s, _ in dependencies if not JobState(s).is_terminal]
    if not open_ and consensus is not None:
        return (
            f"its replicas run on nodes of distinct operators until {consensus.k} agree "
            "(each replica is a job of its own: sandrun list)"
        )
    if not open_:
        return "its dependencies ended; it is being released"
    shown = ", ".join(f"{n} ({i}, {s})" for i, n, s in open_[:3])
    more = f" and {len(open_) - 3} more" if len(open_) > 3 else ""
    return f"waiting for {shown}{more} to end"
