"""infra/ against the code and the README: every Bicep file parses (checkov skips a file it cannot parse
without failing), the app settings infra/ writes are the ones the code reads and the README documents,
and the queues, tables and blob trigger it wires up are the ones function_app.py and shared/ use."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from azurefunctions.extensions.bindings.blob import utils as blob_binding
from pycep import BicepParser

from shared.control.store import CONNECTIONS, EXPORTS, RUNS, TRIGGERS
from shared.settings import RUNS_QUEUE, Settings
from tools.functions_host import FUNCTIONS

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
CODE_FILES = [ROOT / "function_app.py", *sorted((ROOT / "shared").rglob("*.py"))]
NO_DEFAULT = "—"


@cache
def parser() -> BicepParser:
    return BicepParser()  # builds the grammar once: about a second


@cache
def bicep(relative: str) -> dict[str, Any]:
    return parser().parse(file_path=INFRA / relative)


def infra_app_settings() -> dict[str, str]:
    """The function app's app settings as written in infra/app/function.bicep (expressions as text)."""
    site = bicep("app/function.bicep")["resources"]["site"]["config"]
    return {s["name"]: s["value"] for s in site["properties"]["siteConfig"]["appSettings"]}


def base_name(setting: str) -> str:
    """`AzureWebJobsStorage__accountName` is one form of the connection setting `AzureWebJobsStorage`."""
    return setting.split("__", 1)[0]


def readme_settings() -> dict[str, str]:
    """Setting name -> its default, from the README's settings table (a row may name several settings)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    settings: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        for name in re.findall(r"`([^`]+)`", cells[0]):
            settings[name] = cells[1]
    return settings


def _is_environ(node: ast.expr) -> bool:
    """`os.environ`, `environ`, or a mapping named `env` (how the code passes the environment around)."""
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id in {"env", "environ"}
    )


def _constant(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _environment_reads(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            name, method = _constant(node.args[0]), node.func.attr
            if name and (
                (method == "get" and _is_environ(node.func.value))  # env.get("X"), os.environ.get("X")
                or method == "getenv"
                or (method == "from_env" and len(node.args) == 2)  # StorageConnection.from_env("X", env)
            ):
                yield name
        elif isinstance(node, ast.Subscript) and _is_environ(node.value) and (name := _constant(node.slice)):
            yield name


def _binding_settings() -> Iterator[str]:
    """Connections and %NAME% expressions of the indexed functions' bindings, as the host resolves them."""
    for function in FUNCTIONS.values():
        for binding in function.get_bindings():
            for attribute, value in vars(binding).items():
                if isinstance(value, str):
                    yield from re.findall(r"%(\w+)%", value)
                    if attribute == "connection":
                        yield value


def settings_the_code_reads() -> set[str]:
    names = set(_binding_settings())
    for path in CODE_FILES:
        names.update(_environment_reads(ast.parse(path.read_text(encoding="utf-8"))))
    return names


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_every_bicep_file_parses(path: Path):
    parsed = bicep(str(path.relative_to(INFRA)))

    assert parsed.get("resources") or parsed.get("parameters"), f"{path} declares nothing"


def test_the_settings_collector_finds_env_reads_connections_and_binding_expressions():
    # Guards the collector itself: one of each kind the code uses today.
    assert {"KEY_VAULT_URL", "KLAVIYO_API_KEY", "AzureWebJobsStorage", "SegmentsStorage", "EXPORT_SCHEDULE"} <= (
        settings_the_code_reads()
    )


def test_every_setting_the_code_reads_is_documented_and_set_by_infra_unless_it_has_a_default():
    documented = readme_settings()
    set_by_infra = {base_name(name) for name in infra_app_settings()}
    read = settings_the_code_reads()

    assert read - documented.keys() == set(), "settings read by the code but missing from the README's table"
    required = {name for name in read if documented[name].startswith(NO_DEFAULT)}
    assert required - set_by_infra == set(), "settings without a default that infra/ does not set"


def test_every_setting_infra_writes_is_documented_and_every_documented_setting_is_used():
    documented = readme_settings().keys()
    set_by_infra = {base_name(name) for name in infra_app_settings()}

    assert set_by_infra - documented == set(), "settings infra/ writes that the README's table does not document"
    assert documented - set_by_infra - settings_the_code_reads() == set(), "README settings nothing reads or sets"


def test_infra_gives_the_app_and_the_blob_binding_identity_based_storage(monkeypatch):
    written = infra_app_settings()
    settings = Settings.from_env(written)

    assert not any(name in written for name in ("AzureWebJobsStorage", "SegmentsStorage")), "no connection strings"
    for storage in (settings.storage, settings.segments_storage):
        assert storage.managed_identity and storage.client_id
    assert settings.storage.blob_url and settings.storage.queue_url and settings.storage.table_url
    assert settings.segments_storage.setting == "SegmentsStorage" and settings.segments_storage.blob_url
    # The blob trigger's SDK-type binding reads these settings itself, with rules of its own.
    for name, value in written.items():
        monkeypatch.setenv(name, value)
    assert blob_binding.get_connection_string("SegmentsStorage") == written["SegmentsStorage__blobServiceUri"]
    assert blob_binding.using_user_managed_identity("SegmentsStorage")


def test_infra_creates_the_queues_and_tables_the_code_uses():
    storage = bicep("app/storage.bicep")["variables"]
    queue_triggers = {
        binding.queue_name
        for function in FUNCTIONS.values()
        for binding in function.get_bindings()
        if binding.type == "queueTrigger"
    }

    assert set(storage["queues"]["value"]) == queue_triggers | {RUNS_QUEUE}
    assert set(storage["tables"]["value"]) == {CONNECTIONS, EXPORTS, RUNS, TRIGGERS}


def test_the_event_grid_subscription_targets_the_event_grid_blob_trigger():
    [blob_function] = [f for f in FUNCTIONS.values() if f.get_trigger().type == "blobTrigger"]
    events = bicep("blob-events.bicep")
    subscription = events["resources"]["segmentDropped"]["config"]["properties"]
    endpoint = subscription["destination"]["properties"]["endpointUrl"]

    assert blob_function.get_trigger().source == "EventGrid"
    assert events["parameters"]["functionName"]["default"] == blob_function.get_function_name()
    assert "/runtime/webhooks/blobs?functionName=Host.Functions.${functionName}&code=${blobsExtensionKey}" in endpoint
    assert subscription["filter"]["includedEventTypes"] == ["Microsoft.Storage.BlobCreated"]
    assert subscription["filter"]["subjectBeginsWith"] == "/blobServices/default/containers/${segmentsContainer}/"
