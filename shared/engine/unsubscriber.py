"""Withdrawn consent (the `unsubscribe_withdrawn` option): the rows whose consent value is set and not
a yes are unsubscribed from the list's marketing, 100 a call, once the run's import jobs are done
(so that they are on the list: Klaviyo unsubscribes a profile that is not on the list from all
marketing). Calls are made in row order on the run's thread, so how far they went is one row: an
invocation whose time runs out notes it, and the next goes on after it."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from shared.engine.callqueue import Call
from shared.engine.report import Counts
from shared.engine.spec import ExportSpec
from shared.engine.subscribe_calls import joined
from shared.klaviyo import MAX_UNSUBSCRIBE_PROFILES, KlaviyoClient, KlaviyoError
from shared.mapping import ConsentReader

log = logging.getLogger(__name__)


class WithdrawnConsents:
    """The run's rows whose consent is withdrawn (`add`, in row order), unsubscribed by `send`."""

    def __init__(
        self,
        client: KlaviyoClient | None,
        spec: ExportSpec,
        reader: ConsentReader,
        counts: Counts,
        lock: threading.Lock,
    ) -> None:
        self.client, self.spec, self.reader, self.counts, self._lock = client, spec, reader, counts, lock
        self.through = -1  # the last packed row an earlier invocation unsubscribed
        self.done = 0  # profiles unsubscribed by earlier invocations and this one
        self.failed = 0  # profiles in calls Klaviyo kept failing (logged, not retried)
        self._calls: list[Call] = []

    def resume(self, saved: dict[str, Any]) -> None:
        self.through, self.done = saved.get("unsubscribed_through", -1), saved.get("unsubscribed", 0)
        with self._lock:
            self.counts.unsubscribed += self.done

    def progress(self) -> dict[str, Any]:
        return {"unsubscribed_through": self.through, "unsubscribed": self.done}

    def add(self, call: Call) -> None:
        keep = call.rows > self.through
        if keep.all():
            self._calls.append(call)
        elif keep.any():
            at = keep.nonzero()[0]
            self._calls.append(Call(call.profiles.take(at), call.rows[at]))

    def send(self) -> KlaviyoError | bool:
        """Unsubscribes them all (True), or until the run's time is up or it is cancelled (False:
        the next invocation goes on), or until a fatal answer (returned)."""
        calls, self._calls = self._calls, []
        sent_now = False
        for call in calls:
            entries = self.reader.entries(call.profiles, consent="UNSUBSCRIBED")
            for start in range(0, len(entries), MAX_UNSUBSCRIBE_PROFILES):
                # At least one call an invocation, so that each one makes progress.
                out_of_time = self.spec.deadline is not None and time.monotonic() > self.spec.deadline
                if self.spec.stop_reason() or (out_of_time and sent_now):
                    return False
                chunk = entries.slice(start, MAX_UNSUBSCRIBE_PROFILES)
                assert self.client is not None
                try:
                    self.client.subscriptions.unsubscribe(self.spec.list_id, joined(chunk), len(chunk))
                except KlaviyoError as exc:
                    if exc.fatal:
                        return exc
                    self.failed += len(chunk)
                    log.warning("unsubscription of %d profiles failed: %s", len(chunk), exc)
                else:
                    self.done += len(chunk)
                    with self._lock:
                        self.counts.unsubscribed += len(chunk)
                sent_now = True
                self.through = int(call.rows[min(start + MAX_UNSUBSCRIBE_PROFILES, len(entries)) - 1])
        return True
