"""The checks made before anything is sent: each part's header has the mapped columns (of types the
mapping takes, and the consent columns when subscribing), and the key can import into the list (and
subscribe to it, when asked to)."""

from __future__ import annotations

from shared.engine.spec import ConfigurationError, ExportSpec
from shared.klaviyo import KlaviyoClient, KlaviyoError
from shared.mapping import column_type_problem
from shared.privacy import short_names
from shared.sources import SegmentError, SegmentSource, SegmentUnavailable, looks_like_data


def check_before_sending(source: SegmentSource, spec: ExportSpec, client: KlaviyoClient | None) -> None:
    """Raises ConfigurationError for what would make the run fail whatever it sent; a segment that
    cannot be read now (SegmentUnavailable) or a Klaviyo error that may pass is raised as it is."""
    try:
        headers = source.headers()
    except SegmentUnavailable:
        raise
    except SegmentError as exc:
        raise ConfigurationError(str(exc)) from None
    for part, header in headers.items():
        missing = spec.mapping.missing_columns(header)
        if spec.subscribe is not None:
            missing = sorted(set(missing) | (set(spec.subscribe.columns) - set(header)))
        if missing:
            found = (
                "the first row looks like data, not column names: is the header row missing?"
                if looks_like_data(header)
                else f"the header has: {short_names(header)}"
            )
            raise ConfigurationError(
                f"{part}: mapped column(s) missing from the header: {short_names(missing)} ({found})"
            )
    for part, kinds in source.column_kinds().items():  # typed parts (Parquet): a column the mapping cannot take
        problem = column_type_problem(spec.mapping, part, kinds)
        if problem is not None:
            raise ConfigurationError(problem)
    if spec.dry_run:
        return
    if client is None:
        raise ConfigurationError("no Klaviyo client: give an API key, or use a dry run")
    try:
        client.check_import_access(spec.list_id)
        if spec.subscribe is not None:
            client.subscriptions.check_access(spec.list_id)
    except KlaviyoError as exc:
        if exc.fatal:
            raise ConfigurationError(str(exc)) from None
        raise
