"""How a run syncs the list with the segment: the options an export or a run may set, checked once."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

DEFAULT_MAX_REMOVAL_SHARE = 0.2


class SyncMode(StrEnum):
    ADD = "add"  # add and update profiles, never remove any
    MIRROR = "mirror"  # the list ends holding exactly the segment's profiles


class SyncOptionsError(ValueError):
    """An option that cannot be right, whatever the segment holds."""


@dataclass(frozen=True)
class SyncOptions:
    mode: SyncMode = SyncMode.ADD
    full: bool = False  # send every profile, whatever the sync state says (the state is still updated)
    confirm_removals: bool = False  # mirror: remove even past max_removal_share (the safety override)
    max_removal_share: float = DEFAULT_MAX_REMOVAL_SHARE  # mirror: a run that would remove more removes nothing
    reconcile: bool = False  # read the list's members: resend those gone from it; mirror: remove strangers

    @classmethod
    def of(
        cls,
        mode: str,
        full: bool = False,
        confirm_removals: bool = False,
        max_removal_share: float = DEFAULT_MAX_REMOVAL_SHARE,
        reconcile: bool = False,
    ) -> SyncOptions:
        """The options from their plain values (a settings record, command-line flags)."""
        try:
            sync_mode = SyncMode(mode)
        except ValueError:
            raise SyncOptionsError(f"unknown sync mode {mode!r}: use add or mirror") from None
        return cls(sync_mode, full, confirm_removals, max_removal_share, reconcile)

    def __post_init__(self) -> None:
        if not 0 <= self.max_removal_share <= 1:
            raise SyncOptionsError(f"max_removal_share must be between 0 and 1, not {self.max_removal_share}")

    @property
    def mirror(self) -> bool:
        return self.mode is SyncMode.MIRROR
