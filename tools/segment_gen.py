"""Generates realistic synthetic segments (with known bad and duplicate rows) for the demo, tests and benchmarks."""

from __future__ import annotations

import argparse
import gzip
import io
import random
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

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
    count: int, seed: int = 7, bad_rate: float = 0.01, duplicate_rate: float = 0.01, expected: Expected | None = None
) -> Iterator[dict[str, str]]:
    """Profiles as dicts of strings; `expected` (if given) is filled with the ground truth."""
    rng = random.Random(seed)
    recent: list[str] = []
    for i in range(count):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        city, country = rng.choice(CITIES)
        email = f"{_ascii(first)}.{_ascii(last)}.{i}@{rng.choice(DOMAINS)}"
        # Unique per row (two people sharing a number would be a real conflict in Klaviyo).
        phone = f"+1{AREA_CODES[(i // 7_900_000) % 10]}{200 + (i // 10_000) % 790}{i % 10_000:04d}"
        roll = rng.random()
        kind = "valid"
        if roll < bad_rate:
            kind = "invalid"
            if rng.random() < 0.75:
                email = rng.choice(BAD_EMAILS)
            else:
                phone = rng.choice(BAD_PHONES)
        elif roll < bad_rate + duplicate_rate and recent:
            kind = "duplicate"
            email = rng.choice(recent)
            email = f"  {email.upper()} " if rng.random() < 0.5 else email.title()
        if expected is not None:
            expected.rows += 1
            if kind == "invalid":
                expected.invalid += 1
            elif kind == "duplicate":
                expected.duplicates += 1
            elif expected.valid_emails is not None:
                expected.valid_emails.add(email)
        if kind == "valid":
            if len(recent) < 1000:
                recent.append(email)
            else:
                recent[rng.randrange(1000)] = email
        yield {
            "customer_id": f"C-{i:08d}",
            "email": email,
            "phone": phone,
            "first_name": first,
            "last_name": last,
            "city": city,
            "country": country,
            "loyalty_tier": rng.choice(TIERS),
            "lifetime_value": f"{rng.uniform(0, 5000):.2f}",
            "signup_date": f"20{rng.randint(15, 25)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
        }


def _ascii(name: str) -> str:
    folded = unicodedata.normalize("NFKD", name.lower()).encode("ascii", "ignore").decode()
    return folded.replace("'", "")


def _csv_line(values: list[str]) -> str:
    out = []
    for v in values:
        out.append('"' + v.replace('"', '""') + '"' if any(c in v for c in ',"\r\n') else v)
    return ",".join(out) + "\r\n"


def encode(rows: Iterator[dict[str, str]], fmt: str = "csv", chunk_rows: int = 20_000) -> Iterator[bytes]:
    """The rows as CSV (with header) or JSON Lines, in byte chunks of `chunk_rows` rows."""
    buffer: list[str] | list[bytes] = []
    if fmt == "csv":
        yield _csv_line(COLUMNS).encode()
    for row in rows:
        if fmt == "csv":
            buffer.append(_csv_line([row[c] for c in COLUMNS]))  # type: ignore[arg-type]
        else:
            buffer.append(orjson.dumps(row) + b"\n")  # type: ignore[arg-type]
        if len(buffer) >= chunk_rows:
            yield "".join(buffer).encode() if fmt == "csv" else b"".join(buffer)  # type: ignore[arg-type]
            buffer = []
    if buffer:
        yield "".join(buffer).encode() if fmt == "csv" else b"".join(buffer)  # type: ignore[arg-type]


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


def write_segment(path: Path, count: int, seed: int = 7, track: bool = True, **rates: float) -> Expected:
    expected = Expected(valid_emails=set() if track else None)
    fmt = "jsonl" if ".jsonl" in path.name else "csv"
    chunks = encode(generate_rows(count, seed, expected=expected, **rates), fmt)
    if path.name.endswith(".gz"):
        chunks = gzipped(chunks)
    with path.open("wb") as f:
        for chunk in chunks:
            f.write(chunk)
    return expected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", type=Path, help="output file: .csv, .jsonl, optionally .gz")
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    expected = write_segment(args.path, args.rows, args.seed, track=False)
    print(f"{args.path}: {expected.rows:,} rows, {expected.invalid:,} invalid, {expected.duplicates:,} duplicates")


if __name__ == "__main__":
    main()
