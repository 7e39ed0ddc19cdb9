"""A profile bulk import job as Klaviyo reports it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ImportJob:
    """One bulk import job: its state, and how many of its profiles Klaviyo has imported or refused."""

    id: str
    status: str
    total: int
    completed: int
    failed: int
    created_at: str

    @property
    def done(self) -> bool:
        return self.status in ("complete", "cancelled")

    @classmethod
    def from_resource(cls, resource: dict[str, Any]) -> ImportJob:
        """The job from its JSON:API resource, with counts Klaviyo leaves empty read as 0."""
        a = resource["attributes"]
        return cls(
            resource["id"],
            a["status"],
            a.get("total_count") or 0,
            a.get("completed_count") or 0,
            a.get("failed_count") or 0,
            a.get("created_at") or "",
        )
