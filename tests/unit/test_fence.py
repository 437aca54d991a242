"""The data-path fence and the pair channel's promise (hasmb.smb.fence, hasmb.smb.pair)."""

from __future__ import annotations

import asyncio
import math
import threading

import pytest

from hasmb.smb.fence import Fence, Fenced, now
from hasmb.smb.pair import CONFIRM_SECONDS, MARGIN, PairClient, PairServer


def test_a_standby_never_mutates() -> None:
    f = Fence()
    with pytest.raises(Fenced):
        f.check("WRITE")
    assert f.refused == 1 and f.mutations == 0


def test_a_lapsed_fence_stays_lapsed_whatever_grants_follow() -> None:
    f = Fence()
    f.hold(now() + 0.05, "lease renewal")
    f.check("WRITE")
    t_end = f.deadline
    while now() < t_end:
        pass
    with pytest.raises(Fenced):
        f.check("WRITE")
    assert f.lapse_reason
    # a grant computed from a ping sent before the freeze arrives after it: refused
    assert not f.grant(now() + 10, "partner confirms")
    with pytest.raises(Fenced):
        f.check("WRITE")


def test_grants_extend_and_never_shorten() -> None:
    f = Fence()
    start = now()
    f.hold(start + 5, "lease renewal")
    assert f.grant(start + 1, "partner confirms")
    assert f.deadline == start + 5
    assert f.grant(start + 7, "partner confirms")
    assert f.deadline == start + 7 and f.source == "partner confirms"


def test_a_mutation_that_outlives_its_deadline_is_counted_and_ends_the_holding() -> None:
    f = Fence()
    f.hold(now() + 0.05, "lease renewal")
    with f.mutation("WRITE"):
        end = f.deadline
        while now() < end:
            pass
    assert f.late == 1
    assert not f.holding and "outlived" in f.lapse_reason


def test_a_planned_revoke_waits_for_running_mutations_and_is_not_late() -> None:
    async def main() -> None:
        f = Fence()
        f.unconditional()
        started, release = threading.Event(), threading.Event()

        def write() -> None:
            with f.mutation("WRITE"):
                started.set()
                release.wait(5)

        worker = asyncio.get_running_loop().run_in_executor(None, write)
        assert await asyncio.to_thread(started.wait, 5)
        f.revoke("handing over")
        waiter = asyncio.ensure_future(f.quiesce(5))
        await asyncio.sleep(0.05)
        assert not waiter.done()  # the write is still between its check and its end
        release.set()
        assert await waiter
        await worker
        assert f.late == 0 and f.mutations == 1
        with pytest.raises(Fenced):
            f.check("WRITE")

    asyncio.run(main())


def test_the_watch_fires_when_no_grant_comes() -> None:
    async def main() -> None:
        f = Fence()
        f.hold(now() + 0.1, "lease renewal")
        task = asyncio.ensure_future(f.watch())
        await asyncio.wait_for(f.lapsed.wait(), 2)
        assert "no grant" in f.lapse_reason
        task.cancel()

    asyncio.run(main())


def test_the_owner_grant_ends_before_the_partner_promise() -> None:
    """Over a real loopback connection: the owner's deadline from one confirmation
    precedes the partner's promise, and a partner that denies grants nothing."""

    async def main() -> None:
        server = PairServer(lambda node, epoch: None, lambda ip: ip == "127.0.0.1")
        port = await server.start("127.0.0.1", 0)
        fence = Fence()
        fence.hold(now() + 5, "lease renewal")
        client = PairClient(fence, "node-a", 3, lambda: ("127.0.0.1", port))
        sent = now()
        assert await client.ping_once()
        assert server.promised_to == ("node-a", 3) and not server.owner_solo
        # the lease grant (5 s) still dominates: a shorter confirmation never shortens it
        assert fence.remaining() > CONFIRM_SECONDS
        assert client.confirmed_at >= sent
        assert client.confirmed_at + CONFIRM_SECONDS - MARGIN < server.promise_until
        server.deny("taking over")
        assert not await client.ping_once()
        assert "taking over" in client.last_why
        assert await client.release()
        assert server.released_by("node-a", 3)
        assert await server.wait_clear("node-a", 3, 0.1) == "it released ownership"
        await client.stop()
        await server.stop()

    asyncio.run(main())


def test_a_lone_owner_turns_bounded_at_its_first_confirmation() -> None:
    async def main() -> None:
        server = PairServer(lambda node, epoch: None, lambda ip: True)
        port = await server.start("127.0.0.1", 0)
        fence = Fence()
        fence.unconditional()
        client = PairClient(
            fence,
            "a",
            1,
            lambda: ("127.0.0.1", port),
            refusal_grants=True,
            solo=lambda: fence.holding and math.isinf(fence.deadline),
        )
        assert await client.ping_once()
        assert server.owner_solo  # it said so while unconditional
        assert not math.isinf(fence.deadline) and fence.remaining() <= CONFIRM_SECONDS
        assert await client.ping_once()
        assert not server.owner_solo
        await server.stop()
        with pytest.raises(OSError):  # the partner went away under the open connection
            await client.ping_once()
        client._close()  # what the ping loop does after a failure
        before = fence.deadline
        assert await client.ping_once()  # refused: no partner process, which grants
        assert fence.deadline >= before
        await client.stop()

    asyncio.run(main())
