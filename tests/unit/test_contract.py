"""hasmb.contract's Lease writes: each one, sent the way its writer sends it, reads
back (read_ownership) as what the other side expects."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from hasmb import contract
from hasmb.contract import (
    ANN_EPOCH,
    ANN_HANDLES,
    ANN_REASON,
    LEASE_SECONDS,
    PLANNED,
    UNPLANNED,
    Fencing,
    LeaseWrite,
    Reason,
    micro_time,
    parse_time,
    read_ownership,
)

T0 = 1_000_000.0


def merge_patch(target: Any, patch: Any) -> Any:
    """What the apiserver does with application/merge-patch+json (RFC 7386), so a
    pod's patch can be read back as the Lease it leaves behind."""
    if not isinstance(patch, Mapping):
        return patch
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def as_stored(body: dict[str, Any], rv: str) -> dict[str, Any]:
    """The object as a later GET returns it: with the apiserver's resourceVersion."""
    return {**body, "metadata": {**body["metadata"], "resourceVersion": rv}}


def whole(write: LeaseWrite, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The operator's rendering of a write (render.lease passes the SVM's own names)."""
    return write.object(
        name="svm1-owner",
        namespace="ns1",
        labels={contract.LABEL_SVM: "svm1"},
        owner_references=[],
        base=base,
    )


def first_lease() -> dict[str, Any]:
    """The Lease as the operator creates it for a new SVM, then stored."""
    return as_stored(whole(contract.assign("node-a", 1, Reason.HOME, T0)), "10")


def test_take_as_the_operator_writes_it_reads_as_a_new_unrenewed_term() -> None:
    body = whole(contract.assign("node-a", 1, Reason.HOME, T0))
    assert "resourceVersion" not in body["metadata"]  # a create: nothing to CAS on
    own = read_ownership(body)
    assert (own.holder, own.epoch, own.reason) == ("node-a", 1, "Home")
    assert own.acquired == own.renewed == T0
    assert own.duration == LEASE_SECONDS and own.fencing is None
    assert not own.holder_renewed  # the operator wrote it: nobody has renewed yet
    assert body["spec"]["leaseTransitions"] == 1
    assert body["apiVersion"] == "coordination.k8s.io/v1" and body["kind"] == "Lease"


def test_take_as_a_partner_pod_patches_it_reads_as_the_pods_own_term() -> None:
    base = first_lease()
    base["metadata"]["annotations"][ANN_HANDLES] = "3"  # the old owner's last renewal
    seen = read_ownership(base)
    write = contract.take(
        seen.resource_version,
        "node-b",
        seen.epoch + 1,
        Reason.PARTNER_FAILOVER,
        T0 + 10,
        fencing=Fencing.LEASE,
    )
    patch = write.patch()
    assert patch["metadata"]["resourceVersion"] == "10"  # the CAS on what it saw
    own = read_ownership(merge_patch(base, patch))
    assert (own.holder, own.epoch, own.reason) == ("node-b", 2, "PartnerFailover")
    assert own.acquired == own.renewed == T0 + 10 and not own.holder_renewed
    assert own.fencing == "lease"
    assert own.duration == LEASE_SECONDS  # a patch leaves the duration as it was


def test_operator_move_starts_clean_and_keeps_the_cas() -> None:
    base = merge_patch(
        first_lease(),
        contract.renew("10", T0 + 2, Fencing.PARTNER, {ANN_HANDLES: "7"}).patch(),
    )
    base = as_stored(base, "11")
    write = contract.assign("node-b", 2, Reason.FAILOVER, T0 + 5, base)
    assert write.new_term and write.resource_version == "11"
    body = whole(write, base)
    assert body["metadata"]["resourceVersion"] == "11"
    # the old holder's renewal annotations are not the new holder's
    assert body["metadata"]["annotations"] == {ANN_EPOCH: "2", ANN_REASON: "Failover"}
    own = read_ownership(body)
    assert (own.holder, own.epoch, own.reason, own.fencing) == ("node-b", 2, "Failover", None)
    assert own.acquired == own.renewed == T0 + 5


def test_restate_keeps_the_holders_times_and_annotations() -> None:
    renewed = as_stored(
        merge_patch(
            first_lease(),
            contract.renew("10", T0 + 2, Fencing.PARTNER, {ANN_HANDLES: "7"}).patch(),
        ),
        "11",
    )
    write = contract.assign("node-a", 1, Reason.GIVEBACK, T0 + 9, renewed)
    assert not write.new_term
    for after in (whole(write, renewed), merge_patch(renewed, write.patch())):
        own = read_ownership(after)
        assert (own.holder, own.epoch, own.reason) == ("node-a", 1, "Giveback")
        assert own.acquired == T0 and own.renewed == T0 + 2 and own.holder_renewed
        assert own.fencing == "partner"
        assert after["metadata"]["annotations"][ANN_HANDLES] == "7"


def test_renew_moves_only_renew_time_and_what_the_holder_reports() -> None:
    base = first_lease()
    write = contract.renew("10", T0 + 1.5, Fencing.PARTNER, {ANN_HANDLES: "4"})
    patch = write.patch()
    assert set(patch["spec"]) == {"renewTime"}  # holder and epoch are never touched
    own = read_ownership(merge_patch(base, patch))
    assert (own.holder, own.epoch, own.reason) == ("node-a", 1, "Home")
    assert own.renewed == T0 + 1.5 and own.acquired == T0 and own.holder_renewed
    assert own.fencing == "partner"
    assert merge_patch(base, patch)["metadata"]["annotations"][ANN_HANDLES] == "4"
    # without a fence, a renewal says nothing about where authority comes from
    bare = contract.renew("10", T0 + 1.5).patch()
    assert "annotations" not in bare["metadata"]
    assert read_ownership(merge_patch(base, bare)).fencing is None


def test_bump_raises_the_epoch_for_the_same_holder() -> None:
    base = first_lease()
    own = read_ownership(merge_patch(base, contract.bump("10", 5, T0 + 3).patch()))
    assert (own.holder, own.epoch, own.reason) == ("node-a", 5, "Home")
    assert own.renewed == T0 + 3 and own.acquired == T0
    after = merge_patch(base, contract.bump("10", 5, T0 + 3).patch())
    assert after["spec"]["leaseTransitions"] == 5  # both places that name the epoch


@pytest.mark.parametrize(
    "write",
    [contract.renew("1", T0), contract.bump("1", 2, T0)],
    ids=["renew", "bump"],
)
def test_partial_writes_are_only_ever_patches(write: LeaseWrite) -> None:
    with pytest.raises(ValueError, match="written whole"):
        whole(write)


def test_both_shapes_of_one_take_read_alike() -> None:
    base = first_lease()
    write = contract.assign("node-b", 2, Reason.PLANNED_TAKEOVER, T0 + 4, base)

    def term(body: dict[str, Any]) -> tuple[object, ...]:
        own = read_ownership(body)
        return (own.holder, own.epoch, own.reason, own.acquired, own.renewed, own.duration)

    assert term(whole(write, base)) == term(merge_patch(base, write.patch()))


def test_reasons_are_one_set_the_pods_can_match_as_text() -> None:
    assert not PLANNED & UNPLANNED
    assert Reason.HOME not in PLANNED | UNPLANNED and Reason.GIVEBACK not in PLANNED | UNPLANNED
    # a pod reads the reason as a plain string out of the Lease
    assert "Failover" in UNPLANNED and "PartnerFailover" in UNPLANNED
    assert "PlannedTakeover" in PLANNED and "Failover" not in PLANNED


def test_micro_time_round_trips_to_the_microsecond() -> None:
    text = micro_time(T0 + 0.123456)
    assert text.endswith("Z") and parse_time(text) == pytest.approx(T0 + 0.123456, abs=1e-6)
    assert parse_time("2026-01-01T00:00:00Z") is not None  # a Time, as pods' conditions carry
    assert parse_time("") is None and parse_time("not a time") is None
    assert read_ownership(None) == contract.Ownership(None, 0, None)
