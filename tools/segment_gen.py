"""Generates realistic synthetic segments (with known bad and duplicate rows) for the demo, tests and benchmarks."""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import functools
import gzip
import io
import itertools
import os
import random
import unicodedata
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobBlock, BlobClient, BlobServiceClient, ContainerClient

COLUMNS = [
    "customer_id",
    "email",
    "phone",
    "first_name",
    "last_name",
    "city",
    "country",
    "loyalty_tier",
    "lifetime_value",
    "signup_date",
]
FIRST = [
    "Ann",
    "Bob",
    "Chloé",
    "Dmitri",
    "Eva",
    "Farid",
    "Grace",
    "Hiro",
    "Inès",
    "Jamal",
    "Kai",
    "Lena",
    "Marta",
    "Noah",
    "Olu",
    "Priya",
    "Quinn",
    "Rosa",
    "Sven",
    "Tariq",
    "Uma",
    "Viktor",
    "Wen",
    "Ximena",
]
LAST = [
    "Lee",
    "García",
    "Smith",
    "Nguyen",
    "O'Brien",
    "Müller",
    "Kowalski",
    "Rossi",
    "Khan",
    "Dubois",
    "Silva",
    "Tanaka",
    "Johnson",
    "Okafor",
    "Novak",
    "Jensen",
]
CITIES = [
    ("Seattle", "US"),
    ("Austin", "US"),
    ("Boston", "US"),
    ("Denver", "US"),
    ("New York", "US"),
    ("Chicago", "US"),
    ("Portland", "US"),
    ("Atlanta", "US"),
]
AREA_CODES = [206, 212, 303, 312, 404, 415, 503, 512, 617, 646]
TIERS = ["bronze", "silver", "gold", "platinum"]
DOMAINS = ["example.com", "mail.example.org", "example.net", "shop.example.co.uk"]
# Each is invalid for any reasonable email rule.
BAD_EMAILS = [
    "not-an-email",
    "bob@",
    "@example.com",
    "ann lee@example.com",
    "x@@example.com",
    "trailing.dot.@example.com",
    "a@b",
    "semi;colon@example.com",
]
BAD_PHONES = ["12", "+99912", "call me", "555"]


@dataclass
class Expected:
    """Ground truth for a generated segment: what an exact export must produce."""

    rows: int = 0
    invalid: int = 0
    duplicates: int = 0
    valid_emails: set[str] | None = field(default_factory=set)

    @property
    def valid(self) -> int:
        return self.rows - self.invalid - self.duplicates


def generate_rows(
    count: int,
    seed: int = 7,
    bad_rate: float = 0.01,
    duplicate_rate: float = 0.01,
    expected: Expected | None = None,
    start: int = 0,
) -> Iterator[dict[str, str]]:
    """Profiles as dicts of strings; `expected` (if given) is filled with the ground truth.

    `start` numbers the rows from there (emails, phones and customer ids derive from that number), so
    segments generated with disjoint ranges share no identifier.
    """
    for values in generate_values(count, seed, bad_rate, duplicate_rate, expected, start):
        yield dict(zip(COLUMNS, values, strict=True))


def generate_values(
    count: int,
    seed: int = 7,
    bad_rate: float = 0.01,
    duplicate_rate: float = 0.01,
    expected: Expected | None = None,
    start: int = 0,
) -> Iterator[tuple[str, ...]]:
    """The rows of `generate_rows` as tuples in COLUMNS order (the fast path for large segments)."""
    rng = random.Random(seed)
    # The same draws as rng.choice / rng.randint / rng.uniform make (so a seed keeps giving the same
    # segment), without their per-call overhead.
    below, draw = rng._randbelow, rng.random  # type: ignore[attr-defined]
    recent: list[str] = []
    valid_emails = expected.valid_emails if expected is not None else None
    rows = invalid = duplicates = 0
    n_first, n_last, n_cities, n_domains, n_tiers = len(FIRST), len(LAST), len(CITIES), len(DOMAINS), len(TIERS)
    try:
        for i in range(start, start + count):
            first, last = FIRST[below(n_first)], LAST[below(n_last)]
            city, country = CITIES[below(n_cities)]
            email = f"{_ascii(first)}.{_ascii(last)}.{i}@{DOMAINS[below(n_domains)]}"
            # Unique per row (two people sharing a number would be a real conflict in Klaviyo).
            phone = f"+1{AREA_CODES[(i // 7_900_000) % 10]}{200 + (i // 10_000) % 790}{i % 10_000:04d}"
            roll = draw()
            rows += 1
            if roll < bad_rate:
                invalid += 1
                if draw() < 0.75:
                    email = BAD_EMAILS[below(len(BAD_EMAILS))]
                else:
                    phone = BAD_PHONES[below(len(BAD_PHONES))]
            elif roll < bad_rate + duplicate_rate and recent:
                duplicates += 1
                email = recent[below(len(recent))]
                email = f"  {email.upper()} " if draw() < 0.5 else email.title()
            else:
                if valid_emails is not None:
                    valid_emails.add(email)
                if len(recent) < 1000:
                    recent.append(email)
                else:
                    recent[below(1000)] = email
            yield (
                f"C-{i:08d}",
                email,
                phone,
                first,
                last,
                city,
                country,
                TIERS[below(n_tiers)],
                f"{5000 * draw():.2f}",
                f"20{15 + below(11)}-0{1 + below(9)}-1{below(10)}",
            )
    finally:  # the counts hold for the rows produced, also when the consumer stops early
        if expected is not None:
            expected.rows += rows
            expected.invalid += invalid
            expected.duplicates += duplicates


@functools.lru_cache(maxsize=256)
def _ascii(name: str) -> str:
    folded = unicodedata.normalize("NFKD", name.lower()).encode("ascii", "ignore").decode()
    return folded.replace("'", "")


def encode(
    rows: Iterable[dict[str, str]] | Iterable[tuple[str, ...]],
    fmt: str = "csv",
    chunk_rows: int = 20_000,
    cdm: bool = False,
) -> Iterator[bytes]:
    """The rows (dicts, or tuples in COLUMNS order) as CSV (with header) or JSON Lines, in byte chunks of
    `chunk_rows` rows. CSV fields are quoted only when they must be (a comma, a quote or a line break);
    `cdm`: as Customer Insights writes a CDM partition, no header and every field quoted."""
    sink = io.StringIO()
    writer = csv.writer(sink, lineterminator="\r\n", quoting=csv.QUOTE_ALL if cdm else csv.QUOTE_MINIMAL)
    if fmt == "csv" and not cdm:
        writer.writerow(COLUMNS)
    dumps = orjson.dumps
    for batch in _batched(rows, chunk_rows):
        if fmt == "csv":
            writer.writerows([row[c] for c in COLUMNS] if isinstance(row, dict) else row for row in batch)
            yield sink.getvalue().encode()
            sink.seek(0)
            sink.truncate()
        else:
            lines = [dumps(row if isinstance(row, dict) else dict(zip(COLUMNS, row, strict=True))) for row in batch]
            lines.append(b"")
            yield b"\n".join(lines)
    if fmt == "csv" and sink.tell():
        yield sink.getvalue().encode()


def _batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def gzipped(chunks: Iterator[bytes]) -> Iterator[bytes]:
    sink = io.BytesIO()
    with gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=5) as gz:
        for chunk in chunks:
            gz.write(chunk)
            if sink.tell():
                yield sink.getvalue()
                sink.seek(0)
                sink.truncate()
    yield sink.getvalue()


def segment_chunks(
    name: str, count: int, seed: int, expected: Expected, start: int = 0, *, cdm: bool = False, **rates: float
) -> Iterator[bytes]:
    """The encoded segment for a file or blob `name` (.csv or .jsonl, optionally .gz)."""
    fmt = "jsonl" if ".jsonl" in name else "csv"
    chunks = encode(generate_values(count, seed, expected=expected, start=start, **rates), fmt, cdm=cdm)
    return gzipped(chunks) if name.endswith(".gz") else chunks


def write_segment(
    path: Path, count: int, seed: int = 7, track: bool = True, start: int = 0, **rates: float
) -> Expected:
    expected = Expected(valid_emails=set() if track else None)
    with path.open("wb") as f:
        for chunk in segment_chunks(path.name, count, seed, expected, start, cdm=False, **rates):
            f.write(chunk)
    return expected


def upload_segment(
    blob: BlobClient,
    count: int,
    seed: int = 7,
    track: bool = False,
    start: int = 0,
    *,
    cdm: bool = False,
    **rates: float,
) -> Expected:
    """Generates a segment straight into a block blob (format from its name), in blocks of about 8 MB
    staged while the next ones are generated, so no file and no whole segment is ever held."""
    expected = Expected(valid_emails=set() if track else None)
    block_ids: list[str] = []
    pending: list[bytes] = []
    size = 0
    with ThreadPoolExecutor(2) as pool:
        staged: list[Future[None]] = []

        def stage() -> None:
            block_id = base64.b64encode(f"{len(block_ids):08d}".encode()).decode()
            block_ids.append(block_id)
            staged.append(pool.submit(blob.stage_block, block_id, b"".join(pending)))
            while len(staged) > 4:  # bounded memory: at most a few blocks in flight
                staged.pop(0).result()

        for chunk in segment_chunks(blob.blob_name, count, seed, expected, start, cdm=cdm, **rates):
            pending.append(chunk)
            size += len(chunk)
            if size >= 8 << 20:
                stage()
                pending, size = [], 0
        if pending or not block_ids:
            stage()
        for future in staged:
            future.result()
    blob.commit_block_list([BlobBlock(block_id) for block_id in block_ids])
    return expected


def arrow_batches(
    count: int, seed: int, expected: Expected, start: int = 0, batch_rows: int = 100_000
) -> Iterator[pa.Table]:
    """The rows of `generate_values` as Arrow tables, as a lake or a CDP would type them: every column a
    string but lifetime_value, a double."""
    for batch in _batched(generate_values(count, seed, expected=expected, start=start), batch_rows):
        columns = [pa.array(values, pa.string()) for values in zip(*batch, strict=True)]
        at = COLUMNS.index("lifetime_value")
        columns[at] = columns[at].cast(pa.float64())
        yield pa.table(columns, names=COLUMNS)


def write_parquet(path: Path, count: int, seed: int = 7, start: int = 0, row_group_rows: int = 128 * 1024) -> Expected:
    """A Parquet file (snappy) of `count` generated rows, in row groups of `row_group_rows`."""
    expected = Expected(valid_emails=None)
    writer: pq.ParquetWriter | None = None
    for table in arrow_batches(count, seed, expected, start):
        writer = writer or pq.ParquetWriter(path, table.schema, compression="snappy")
        writer.write_table(table, row_group_size=row_group_rows)
    if writer is not None:
        writer.close()
    return expected


def write_delta(folder: Path, count: int, seed: int = 7, commits: int = 4) -> Expected:
    """A Delta table of `count` generated rows, written with delta-rs in `commits` appends (one data
    file each)."""
    from deltalake import write_deltalake

    expected = Expected(valid_emails=None)
    per_commit = -(-count // commits)
    batches = arrow_batches(count, seed, expected, batch_rows=per_commit)
    for table in batches:
        write_deltalake(str(folder), table, mode="append")
    return expected


def upload_files(container: ContainerClient, folder: Path, prefix: str) -> None:
    """Every file under `folder` to blobs under `prefix`; a Delta log last, as a writer commits it."""
    files = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: ("_delta_log" in p.parts, str(p)))
    for path in files:
        with path.open("rb") as data:
            container.upload_blob(prefix + path.relative_to(folder).as_posix(), data, overwrite=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", help="output file: .csv, .jsonl, optionally .gz (container/blob with --blob)")
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start", type=int, default=0, help="number of the first row (identifiers derive from it)")
    parser.add_argument(
        "--blob", action="store_true", help="write to the blob container/name in AzureWebJobsStorage's account"
    )
    args = parser.parse_args()
    if args.blob:
        container, _, name = args.path.partition("/")
        service = BlobServiceClient.from_connection_string(os.environ["AzureWebJobsStorage"])  # noqa: SIM112
        with contextlib.suppress(ResourceExistsError):
            service.create_container(container)
        expected = upload_segment(service.get_blob_client(container, name), args.rows, args.seed, start=args.start)
    else:
        expected = write_segment(Path(args.path), args.rows, args.seed, track=False, start=args.start)
    print(f"{args.path}: {expected.rows:,} rows, {expected.invalid:,} invalid, {expected.duplicates:,} duplicates")


if __name__ == "__main__":
    main()
