"""An export's `subscribe` option as the admin API accepts and returns it (validated with pydantic)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from shared.mapping import DEFAULT_CONSENT_VALUES, MappingError, SubscribeOptions


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


Channel = Literal["email", "sms"]
ColumnName = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
ConsentValue = Annotated[str, StringConstraints(min_length=1, max_length=100)]
SUBSCRIBE_DESCRIPTION = (
    "subscribe the rows whose consent column says yes to marketing on these channels, into the export's list "
    "(besides importing them; other rows are only imported, never subscribed). Needs the key's "
    "subscriptions:write scope"
)


class SubscribeIn(_Strict):
    """An export's `subscribe` option (see README "Subscriptions")."""

    channels: list[Channel] = Field(min_length=1, max_length=2, description="email, sms or both (SMS needs a phone)")
    consent_column: ColumnName = Field(description="the column saying whether a row consents")
    consent_values: list[ConsentValue] = Field(
        default_factory=lambda: list(DEFAULT_CONSENT_VALUES),
        min_length=1,
        max_length=50,
        description="the values meaning yes, compared trimmed and case-insensitively",
    )
    consented_at_column: ColumnName | None = Field(
        None,
        description="when each row consented (ISO 8601, UTC when no zone is given); a future or unreadable one is "
        "not subscribed. Without it a historical import records the run's start as the consent time",
    )
    historical_import: bool = Field(
        True,
        description="consent collected earlier: subscribed at once, with no double opt-in confirmation; false: "
        "through the list's opt-in process (a double opt-in list sends a confirmation first)",
    )
    unsubscribe_withdrawn: bool = Field(
        False,
        description="also unsubscribe from the list's marketing the rows whose consent value is set and not a yes "
        "(after their import, so that they are on the list)",
    )

    @model_validator(mode="after")
    def _valid(self) -> SubscribeIn:
        try:
            SubscribeOptions.from_dict(self.model_dump())
        except MappingError as exc:
            raise ValueError(str(exc).removeprefix("subscribe.")) from None
        return self
