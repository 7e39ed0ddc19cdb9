"""The command line's subscription options: `--subscribe email,sms --consent-column C
[--consent-values V,...] [--consented-at-column C] [--no-historical-import] [--unsubscribe-withdrawn]`."""

from __future__ import annotations

import argparse
import logging

from shared.engine import ConfigurationError
from shared.mapping import DEFAULT_CONSENT_VALUES, SubscribeOptions

log = logging.getLogger(__name__)


def add_subscribe_options(run: argparse.ArgumentParser) -> None:
    """Which rows are subscribed to marketing, besides being imported."""
    run.add_argument(
        "--subscribe",
        metavar="CHANNELS",
        help="email, sms or email,sms: subscribe the rows whose --consent-column says yes to marketing on these "
        "channels (SMS needs a phone number); the other rows are only imported. Needs the subscriptions:write scope",
    )
    run.add_argument("--consent-column", metavar="C", help="with --subscribe: the column saying whether a row consents")
    run.add_argument(
        "--consent-values",
        metavar="V,...",
        help=f"the consent values meaning yes, case-insensitive (default: {','.join(DEFAULT_CONSENT_VALUES)})",
    )
    run.add_argument(
        "--consented-at-column",
        metavar="C",
        help="when each row consented (ISO 8601; none means UTC): a future or unreadable one is not subscribed",
    )
    run.add_argument(
        "--no-historical-import",
        action="store_true",
        help="subscribe through the list's opt-in process (a double opt-in list sends a confirmation first) "
        "instead of as consent collected earlier",
    )
    run.add_argument(
        "--unsubscribe-withdrawn",
        action="store_true",
        help="also unsubscribe (from the list's marketing) the rows whose consent value is set and not a yes",
    )


def subscribe_options(args: argparse.Namespace) -> SubscribeOptions | None:
    """The --subscribe options, checked; None without --subscribe."""
    others = (args.consent_column, args.consent_values, args.consented_at_column)
    if args.subscribe is None:
        if any(value is not None for value in others) or args.no_historical_import or args.unsubscribe_withdrawn:
            raise ConfigurationError("the consent options go with --subscribe email, sms or email,sms")
        return None
    if not args.consent_column:
        raise ConfigurationError("--subscribe needs --consent-column (the column saying whether a row consents)")
    if not getattr(args, "state", None):
        log.warning(
            "--subscribe without --state: every consenting row is subscribed again, and Klaviyo's subscribe "
            "lifts an unsubscribe made since; give --state to subscribe only new or changed consent"
        )
    channels = tuple(channel.strip().lower() for channel in args.subscribe.split(","))
    values = args.consent_values.split(",") if args.consent_values is not None else DEFAULT_CONSENT_VALUES
    try:
        return SubscribeOptions(
            channels,
            args.consent_column,
            tuple(values),
            args.consented_at_column or None,
            historical_import=not args.no_historical_import,
            unsubscribe_withdrawn=args.unsubscribe_withdrawn,
        )
    except ValueError as exc:
        field, _, why = str(exc).partition(": ")
        raise ConfigurationError(f"{_FLAGS.get(field, field)}: {why}") from None


# The flag each SubscribeOptions field comes from, for its errors.
_FLAGS = {
    "subscribe.channels": "--subscribe",
    "subscribe.consent_column": "--consent-column",
    "subscribe.consent_values": "--consent-values",
    "subscribe.consented_at_column": "--consented-at-column",
}
