"""Mirror mode's removals: the profiles that left the segment taken off the list (never deleted or
unsubscribed), held back by a safety stop when the segment looks wrong."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from shared.klaviyo import KlaviyoClient
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
    """What a mirror run takes off the list."""

    departed: np.ndarray  # positions in the state of the profiles that left the segment, their ids known
    strangers: np.ndarray  # profile ids of members neither in the segment nor in the state (reconcile)

    @classmethod
    def of(cls, state: SyncState, departed: np.ndarray, strangers: np.ndarray) -> Removals:
        """The departed profiles whose Klaviyo profile id is known (the others cannot be removed),
        and the strangers that are not one of them."""
        removable = departed[state.profile_ids[departed] != b""]
        unknown = len(departed) - len(removable)
        if unknown:
            log.warning("mirror: %d departed profile(s) have no known Klaviyo id and stay on the list", unknown)
        if len(strangers):
            known = set(state.profile_ids[removable].tolist())
            strangers = np.array([p for p in strangers.tolist() if p not in known], dtype="S")
        return cls(removable, strangers)

    @property
    def count(self) -> int:
        return len(self.departed) + len(self.strangers)


def take_off_list(
    client: KlaviyoClient, list_id: str, state: SyncState, removals: Removals, count_removed: Callable[[int], None]
) -> None:
    """Removes the strangers, then the departed profiles, dropping these from the state as Klaviyo
    confirms their removal (so that a failure midway leaves the state right)."""
    strangers = removals.strangers
    if len(strangers):
        client.remove_from_list(list_id, [p.decode() for p in strangers.tolist()], count_removed)
        log.info("reconcile: %d member(s) not put there by this export and not in the segment removed", len(strangers))
    departed = _DroppedWhenRemoved(state, state.ids[removals.departed], count_removed)
    profile_ids = [p.decode() for p in state.profile_ids[removals.departed].tolist()]
    client.remove_from_list(list_id, profile_ids, departed.removed)
    log.info("mirror: %d profile(s) that left the segment were removed from list %s", len(profile_ids), list_id)


class _DroppedWhenRemoved:
    """Departed profiles being taken off the list: Klaviyo confirms their removal a call at a time,
    in the order they were given, and each confirmed profile is dropped from the state."""

    def __init__(self, state: SyncState, ids: np.ndarray, count_removed: Callable[[int], None]) -> None:
        # Their identifier fingerprints, not their positions: each drop moves the profiles after it.
        self.state, self.ids, self.count_removed = state, ids, count_removed
        self.done = 0

    def removed(self, count: int) -> None:
        self.count_removed(count)
        self.state.drop(self.ids[self.done : self.done + count])
        self.done += count
