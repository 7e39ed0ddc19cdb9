"""Mirror mode's removals: the profiles that left the segment taken off the list (never deleted or
unsubscribed), held back by a safety stop when the segment looks wrong."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from shared.klaviyo import KlaviyoClient
from shared.sync.lookup import OnList
from shared.sync.options import SyncOptions
from shared.sync.state import SyncState

log = logging.getLogger(__name__)


def safety_stop(options: SyncOptions, leaving: int, on_list: int, segment_size: int) -> str | None:
    """Why nothing may be removed (the segment is empty, or more than the allowed share of the list
    would leave it), or None when the removals may go ahead."""
    if options.confirm_removals:
        return None
    if not segment_size:
        return (
            f"mirror: the segment holds no valid profile, so all {leaving:,} profiles on the list "
            "would be removed; nothing was removed. If that is right, run again "
            "with confirm_removals (--confirm-removals)"
        )
    share = leaving / on_list
    if share > options.max_removal_share:
        return (
            f"mirror: {leaving:,} of {on_list:,} profiles on the list ({share:.1%}) are not in the "
            f"segment, more than the {options.max_removal_share:.0%} allowed; nothing was removed. If the "
            "segment is right, run again with confirm_removals (--confirm-removals)"
        )
    return None


@dataclass(frozen=True)
class Removals:
    """What a mirror run takes off the list: each with its identifier fingerprint (to drop it from the
    state and the register once Klaviyo confirms) and its Klaviyo profile id."""

    ids: np.ndarray  # identifier fingerprints: found on the list by lookup, or (older states) whose id is known
    profile_ids: list[str]
    strangers: list[str]  # profile ids of members neither in the segment nor put there by this export (reconcile)

    @classmethod
    def of(cls, found: OnList, state: SyncState, known: np.ndarray, strangers: np.ndarray) -> Removals:
        """The leavers found on the list, the departed profiles of the state whose Klaviyo id is known
        but that the register does not hold (`known`: their positions in the state), and the strangers
        that are not one of them."""
        ids = np.concatenate([found.ids, state.ids[known]])
        profile_ids = found.profile_ids + [p.decode() for p in state.profile_ids[known].tolist()]
        taken = set(profile_ids)
        return cls(ids, profile_ids, [p for p in (s.decode() for s in strangers.tolist()) if p not in taken])

    @property
    def count(self) -> int:
        return len(self.profile_ids) + len(self.strangers)


def take_off_list(
    client: KlaviyoClient,
    list_id: str,
    state: SyncState,
    removals: Removals,
    count_removed: Callable[[int], None],
    dropped: Callable[[np.ndarray], None],
) -> None:
    """Removes the strangers, then the profiles that left the segment, dropping these from the state
    (and handing them to `dropped`) as Klaviyo confirms their removal, so that a failure midway
    leaves the state right."""
    if removals.strangers:
        client.remove_from_list(list_id, removals.strangers, count_removed)
        count = len(removals.strangers)
        log.info("reconcile: %d member(s) not put there by this export and not in the segment removed", count)
    departed = _DroppedWhenRemoved(state, removals.ids, count_removed, dropped)
    client.remove_from_list(list_id, removals.profile_ids, departed.removed)
    count = len(removals.profile_ids)
    log.info("mirror: %d profile(s) that left the segment were removed from list %s", count, list_id)


class _DroppedWhenRemoved:
    """Departed profiles being taken off the list: Klaviyo confirms their removal a call at a time,
    in the order they were given, and each confirmed profile is dropped from the state."""

    def __init__(
        self,
        state: SyncState,
        ids: np.ndarray,
        count_removed: Callable[[int], None],
        dropped: Callable[[np.ndarray], None],
    ) -> None:
        # Their identifier fingerprints, not their positions: each drop moves the profiles after it.
        self.state, self.ids, self.count_removed, self.dropped = state, ids, count_removed, dropped
        self.done = 0

    def removed(self, count: int) -> None:
        confirmed = self.ids[self.done : self.done + count]
        self.count_removed(count)
        self.state.drop(confirmed)
        self.dropped(confirmed)
        self.done += count
