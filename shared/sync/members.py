"""Profiles read back from Klaviyo (a list's members, an import job's profiles) as fingerprints of their
identifiers, so that they can be matched with the sync state and the rows a run sent."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from shared.klaviyo import KlaviyoClient
from shared.mapping import text_fingerprints
from shared.sync.state import SyncState

NO_FINGERPRINTS = np.zeros(0, dtype=np.int64)
NO_PROFILE_IDS = np.zeros(0, dtype="S1")


class IdentifiedProfiles(NamedTuple):
    """Klaviyo profiles in the order read: their profile ids and, for each identifier kind (email,
    phone number, external id), the fingerprints of their identifiers in the same order."""

    profile_ids: list[str]
    ids: list[np.ndarray]


def identified_profiles(profiles: Iterable[tuple[str, Mapping[str, object]]]) -> IdentifiedProfiles:
    """Reads (profile id, identifier attributes) pairs, as the Klaviyo client yields them."""
    profile_ids: list[str] = []
    texts: list[list[str]] = [[], [], []]
    for profile_id, attributes in profiles:
        profile_ids.append(profile_id)
        for kind, text in zip(texts, _identifier_texts(attributes), strict=True):
            kind.append(text)
    return IdentifiedProfiles(profile_ids, [text_fingerprints(kind) for kind in texts])


def _identifier_texts(attributes: Mapping[str, object]) -> tuple[str, str, str]:
    """A Klaviyo profile's identifiers as identifier_text writes them. A profile may hold more
    identifiers than the row sent, so each of them is returned, to be tried in turn."""
    return (
        str(attributes.get("email") or "").lower(),
        str(attributes.get("phone_number") or ""),
        "x:" + str(attributes.get("external_id") or ""),
    )


@dataclass(frozen=True)
class ListMembers:
    """The list's members as Klaviyo has them (read when a run reconciles the list with its state)."""

    profile_ids: np.ndarray  # bytes, one per member
    ids: list[np.ndarray]  # one array per identifier kind (email, phone, external id), in member order
    known: np.ndarray  # every identifier fingerprint of a member, sorted

    @classmethod
    def read(cls, client: KlaviyoClient, list_id: str) -> ListMembers:
        """Reads every member of the list, 100 a call."""
        members = identified_profiles(client.list_member_ids(list_id))
        profile_ids = np.array(members.profile_ids, dtype="S") if members.profile_ids else NO_PROFILE_IDS
        return cls(profile_ids, members.ids, np.unique(np.concatenate(members.ids)))

    def __len__(self) -> int:
        return len(self.profile_ids)

    def off_list(self, state: SyncState | None) -> np.ndarray:
        """Identifier fingerprints of the profiles the state has that are no longer on the list."""
        if state is None or not len(state):
            return NO_FINGERPRINTS
        on_list = np.zeros(len(state), dtype=bool)
        for hashed in self.ids:
            at, found = state.find(hashed)
            on_list[at[found]] = True
        return state.ids[~on_list]

    def not_in_segment(self, state: SyncState, seen: np.ndarray) -> np.ndarray:
        """Profile ids of the members that are neither in the segment (`seen`: identifier
        fingerprints) nor in the state: added by hand or by another tool."""
        if not len(self.profile_ids):
            return NO_PROFILE_IDS
        matched = np.zeros(len(self.profile_ids), dtype=bool)
        for hashed in self.ids:
            matched |= np.isin(hashed, seen) | state.known(hashed)
        return self.profile_ids[~matched]

    def give_profile_ids(self, state: SyncState) -> None:
        """Records the members' profile ids for the profiles the state has."""
        for hashed in self.ids:
            state.set_profile_ids(hashed, self.profile_ids)
