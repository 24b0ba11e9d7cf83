"""The order in which nodes claim work, on every backend: priority, fair share between
owners, per-owner limits, and reservations that keep a big job from starving."""

from __future__ import annotations

import threading

from sandrun.models import AttemptResult, Capacity, Claim, JobRecord
from sandrun.service.retry import decide
from sandrun.spec.policy import Policy, parse_policy
from sandrun.store import Store
from sandrun.store.attempts import Beat
from tests.contract.queued import add

LEASE = 30.0
NOW = 200.0
CPU_NODE = Capacity(cpus=64, memory_mb=1 << 20)
GPU_NODE = Capacity(cpus=8, memory_mb=64 << 10, gpus=2, gpu_type="a100", gpu_memory_gb=80)


def node(store: Store, name: str, capacity: Capacity, seen: float = NOW) -> str:
    store.register_node(name, name, capacity, {}, seen)
    return name


def take(
    store: Store, name: str, free: Capacity, policy: Policy | None = None, now: float = NOW
) -> Claim | None:
    return store.claim(name, free, now, LEASE, policy or Policy())


def end(store: Store, claim: Claim, now: float = NOW) -> None:
    store.start_attempt(claim.job.id, claim.attempt, claim.token, now)
    store.finish_attempt(
        claim.job.id, claim.attempt, claim.token, AttemptResult(exit_code=0), decide, now
    )


def owners_in_claim_order(store: Store, name: str, free: Capacity, policy: Policy) -> list[str]:
    order = []
    while (got := take(store, name, free, policy)) is not None:
        order.append(f"{got.job.owner}:{got.job.name}")
    return order


def test_owners_take_turns_by_running_work_then_age(store: Store) -> None:
    n = node(store, "n", CPU_NODE)
    for i in range(3):
        add(store, 100.0 + i, owner="alice", name=f"a{i}")
    for i in range(2):
        add(store, 110.0 + i, owner="bob", name=f"b{i}")
    # alice submitted first, but once she runs a job bob (running nothing) goes next.
    assert owners_in_claim_order(store, n, CPU_NODE, Policy()) == [
        "alice:a0",
        "bob:b0",
        "alice:a1",
        "bob:b1",
        "alice:a2",
    ]


def test_share_counts_the_resource_an_owner_uses_most(store: Store) -> None:
    gpu = node(store, "gpu", GPU_NODE)
    node(store, "cpu", CPU_NODE)
    big = take_after(store, gpu, add(store, 100.0, owner="alice", gpus=1), GPU_NODE)
    assert big.job.owner == "alice"  # alice now holds half the pool's GPUs
    add(store, 101.0, owner="alice", name="a", cpus=1)
    add(store, 105.0, owner="bob", name="b", cpus=8)  # 8 of 72 CPUs is still less than half
    got = take(store, "cpu", CPU_NODE)
    assert got is not None and got.job.name == "b"


def take_after(store: Store, name: str, job: JobRecord, free: Capacity, now: float = NOW) -> Claim:
    got = take(store, name, free, now=now)
    assert got is not None and got.job.id == job.id
    return got


def test_priority_comes_before_fair_share(store: Store) -> None:
    n = node(store, "n", CPU_NODE)
    add(store, 100.0, owner="alice", name="a0")
    add(store, 101.0, owner="alice", name="urgent", priority="high")
    add(store, 102.0, owner="bob", name="b0")
    assert owners_in_claim_order(store, n, CPU_NODE, Policy()) == [
        "alice:urgent",
        "bob:b0",
        "alice:a0",
    ]


def test_an_owner_at_max_running_jobs_waits_and_others_go_on(store: Store) -> None:
    n = node(store, "n", CPU_NODE)
    policy = parse_policy({"limits": {"alice": {"max_running_jobs": 1}}})
    first = add(store, 100.0, owner="alice")
    second = add(store, 101.0, owner="alice")
    bobs = add(store, 102.0, owner="bob")
    one = take(store, n, CPU_NODE, policy)
    two = take(store, n, CPU_NODE, policy)
    assert one is not None and two is not None
    assert [one.job.id, two.job.id] == [first.id, bobs.id]
    assert take(store, n, CPU_NODE, policy) is None
    end(store, one)
    three = take(store, n, CPU_NODE, policy)
    assert three is not None and three.job.id == second.id


def test_max_gpus_holds_back_gpu_jobs_but_not_cpu_jobs(store: Store) -> None:
    gpu = node(store, "gpu", Capacity(cpus=32, memory_mb=1 << 20, gpus=8, gpu_type="a100"))
    free = Capacity(cpus=32, memory_mb=1 << 20, gpus=8, gpu_type="a100")
    policy = parse_policy({"limits": {"default": {"max_gpus": 3}}})
    add(store, 100.0, owner="alice", name="two", gpus=2)
    add(store, 101.0, owner="alice", name="two-more", gpus=2)
    add(store, 102.0, owner="alice", name="one", gpus=1)
    add(store, 103.0, owner="alice", name="cpu")
    assert owners_in_claim_order(store, gpu, free, policy) == [
        "alice:two",
        "alice:one",  # two-more would make 4 GPUs
        "alice:cpu",
    ]


def test_a_limit_holds_under_concurrent_claims(store: Store) -> None:
    policy = parse_policy({"limits": {"default": {"max_running_jobs": 3}}})
    for i in range(20):
        add(store, 100.0 + i, owner="alice")
    claimed: list[str] = []
    lock = threading.Lock()

    def agent(name: str) -> None:
        node(store, name, CPU_NODE)
        while (got := take(store, name, CPU_NODE, policy)) is not None:
            with lock:
                claimed.append(got.job.id)

    threads = [threading.Thread(target=agent, args=(f"n{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 3


def test_a_big_job_gets_the_node_before_small_ones_that_came_later(store: Store) -> None:
    n = node(store, "n", Capacity(cpus=2, memory_mb=8 << 10))
    running = add(store, 90.0, owner="alice", name="running")
    first = take_after(store, n, running, Capacity(cpus=2, memory_mb=8 << 10))
    big = add(store, 100.0, owner="bob", name="big", cpus=2)
    add(store, 101.0, owner="alice", name="small")
    one_free = Capacity(cpus=1, memory_mb=8 << 10)
    # Without reservations the small job takes the free CPU, and the next, forever.
    got = take(store, n, one_free, parse_policy({"reserve_after": None}))
    assert got is not None and got.job.name == "small"
    end(store, got)
    add(store, 102.0, owner="alice", name="small2")
    # With them, the node keeps itself for the big job: nothing else starts...
    assert take(store, n, one_free) is None
    assert "reserved" in [e.kind for e in store.events(big.id)]
    # ...until the running job ends and the big one fits.
    end(store, first)
    got = take(store, n, Capacity(cpus=2, memory_mb=8 << 10))
    assert got is not None and got.job.id == big.id


def test_a_reserved_node_backfills_what_fits_beside_the_big_job(store: Store) -> None:
    n = node(store, "n", GPU_NODE)
    # (Claimed before the reservation: only what starts after it must fit beside it.)
    running = take_after(store, n, add(store, 90.0, owner="alice", gpus=1), GPU_NODE, now=NOW - 1)
    big = add(store, 100.0, owner="bob", name="big", gpus=2, cpus=2)
    add(store, 101.0, owner="alice", name="one-gpu", gpus=1)
    add(store, 102.0, owner="alice", name="cpu-a", cpus=4)
    add(store, 103.0, owner="alice", name="cpu-b", cpus=4)
    free = GPU_NODE.model_copy(update={"cpus": 7, "gpus": 1})
    got = take(store, n, free)
    # The GPU job would delay the big one; a CPU job fits beside it (8 - 2 CPUs left)...
    assert got is not None and got.job.name == "cpu-a"
    # ...but not a second one: 4 + 4 CPUs beside the big job's 2 is more than 8.
    assert take(store, n, free.model_copy(update={"cpus": 3})) is None
    end(store, running)
    got = take(store, n, GPU_NODE.model_copy(update={"cpus": 4}))
    assert got is not None and got.job.id == big.id


def test_another_node_with_room_takes_a_reserved_job(store: Store) -> None:
    busy = node(store, "busy", Capacity(cpus=2, memory_mb=8 << 10))
    node(store, "idle", Capacity(cpus=2, memory_mb=8 << 10))
    add(store, 90.0, owner="alice", name="running")
    take(store, busy, Capacity(cpus=2, memory_mb=8 << 10))
    big = add(store, 100.0, owner="bob", name="big", cpus=2)
    assert take(store, busy, Capacity(cpus=1, memory_mb=8 << 10)) is None  # reserves
    got = take(store, "idle", Capacity(cpus=2, memory_mb=8 << 10))
    assert got is not None and got.job.id == big.id


def test_a_silent_nodes_reservation_passes_to_the_next(store: Store) -> None:
    small = Capacity(cpus=2, memory_mb=8 << 10)
    one_free = Capacity(cpus=1, memory_mb=8 << 10)
    gone = node(store, "gone", small, seen=NOW)
    here = node(store, "here", small, seen=NOW)
    for name in (gone, here):
        add(store, 90.0, owner="alice", name=f"running-{name}")
        take(store, name, small)
    big = add(store, 100.0, owner="bob", name="big", cpus=2)
    assert take(store, gone, one_free) is None
    add(store, 101.0, owner="alice", name="small")
    # Within a lease "here" may not reserve the same job: it backfills nothing, takes small.
    got = take(store, here, one_free)
    assert got is not None and got.job.name == "small"
    later = NOW + 2 * LEASE
    store.heartbeats([Beat(here, "active", [])], later, LEASE)
    add(store, 102.0, owner="alice", name="small2")
    assert take(store, here, one_free, now=later) is None  # "gone" went silent: here reserves
    reserved = [e.message for e in store.events(big.id) if e.kind == "reserved"]
    assert reserved == ["node gone is kept for it", "node here is kept for it"]


def test_reservations_wait_reserve_after(store: Store) -> None:
    n = node(store, "n", Capacity(cpus=2, memory_mb=8 << 10))
    add(store, 90.0, owner="alice", name="running")
    take(store, n, Capacity(cpus=2, memory_mb=8 << 10))
    add(store, NOW - 5, owner="bob", name="big", cpus=2)
    add(store, NOW - 4, owner="alice", name="small")
    policy = parse_policy({"reserve_after": 60})
    got = take(store, n, Capacity(cpus=1, memory_mb=8 << 10), policy)
    assert got is not None and got.job.name == "small"


def test_a_job_naming_several_gpu_models_runs_on_any_of_them(store: Store) -> None:
    either = add(store, 100.0, owner="alice", gpus="2xa100,h100")
    t4 = Capacity(cpus=8, memory_mb=1 << 15, gpus=4, gpu_type="t4", gpu_memory_gb=16)
    h100 = Capacity(cpus=8, memory_mb=1 << 15, gpus=4, gpu_type="h100", gpu_memory_gb=80)
    assert take(store, node(store, "t4", t4), t4) is None
    got = take(store, node(store, "h100", h100), h100)
    assert got is not None and got.job.id == either.id


def test_a_draining_nodes_reservation_passes_to_the_next(store: Store) -> None:
    small = Capacity(cpus=2, memory_mb=8 << 10)
    one_free = Capacity(cpus=1, memory_mb=8 << 10)
    for name in ("leaving", "staying"):
        node(store, name, small)
        add(store, 90.0, owner="alice", name=f"running-{name}")
        take(store, name, small)
    big = add(store, 100.0, owner="bob", name="big", cpus=2)
    assert take(store, "leaving", one_free) is None  # reserves
    store.heartbeats([Beat("leaving", "draining", [])], NOW, LEASE)
    assert take(store, "staying", one_free) is None  # takes the reservation over
    reserved = [e.message for e in store.events(big.id) if e.kind == "reserved"]
    assert reserved[-1] == "node staying is kept for it"


def test_a_released_reservation_wakes_the_other_nodes_polls(store: Store) -> None:
    """Polls of other nodes that found the job reserved sleep until something changes: the
    release must be such a change."""
    two = Capacity(cpus=2, memory_mb=8 << 10)
    n = node(store, "n", two)
    add(store, 90.0, owner="alice", name="running")
    take(store, n, two)
    big = add(store, 100.0, owner="bob", name="big", cpus=2)
    assert take(store, n, Capacity(cpus=1, memory_mb=8 << 10)) is None  # reserves
    assert store.reserved_node(big.id) == n
    heard: list[str] = []
    store.db.subscribe(heard.append)
    node(store, "n", Capacity(cpus=1, memory_mb=8 << 10))  # it shrank: big can never fit
    assert take(store, n, Capacity(cpus=1, memory_mb=8 << 10)) is None
    assert store.reserved_node(big.id) is None
    assert "submitted" in heard
