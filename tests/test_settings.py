"""Storage settings: a connection string or the Functions identity-based form, and the clients built from each
(no network: building a client contacts nothing)."""

from __future__ import annotations

import math

import pytest
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

from shared.control import Services
from shared.settings import Settings
from shared.storage import blob_service, queue_client, table_service

ACCOUNT_KEY = "c2VjcmV0LWtleS1ub3QtZm9yLWxvZ3M="
CONNECTION_STRING = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    f"AccountKey={ACCOUNT_KEY};"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)
CLIENT_ID = "00000000-1111-2222-3333-444444444444"


def test_a_connection_string_is_used_for_every_client_and_for_the_segments():
    settings = Settings.from_env({"AzureWebJobsStorage": CONNECTION_STRING})

    assert settings.storage.connection_string == CONNECTION_STRING
    assert settings.segments_storage == settings.storage
    assert blob_service(settings.storage).url == "http://127.0.0.1:10000/devstoreaccount1/"
    assert queue_client(settings.storage, "export-runs").url == "http://127.0.0.1:10001/devstoreaccount1/export-runs"
    assert table_service(settings.storage).url == "http://127.0.0.1:10002/devstoreaccount1"
    assert blob_service(settings.storage).credential.account_name == "devstoreaccount1"


def test_the_account_key_is_kept_out_of_the_settings_repr():
    assert ACCOUNT_KEY not in repr(Settings.from_env({"AzureWebJobsStorage": CONNECTION_STRING}))


def test_an_account_name_with_a_user_assigned_identity_gives_the_three_endpoints_and_that_identity():
    settings = Settings.from_env(
        {
            "AzureWebJobsStorage__accountName": "stkseabc",
            "AzureWebJobsStorage__credential": "managedidentity",
            "AzureWebJobsStorage__clientId": CLIENT_ID,
        }
    )
    storage = settings.storage

    assert (storage.managed_identity, storage.client_id) == (True, CLIENT_ID)
    blobs, queue, tables = blob_service(storage), queue_client(storage, "export-runs"), table_service(storage)
    assert blobs.url == "https://stkseabc.blob.core.windows.net/"
    assert queue.url == "https://stkseabc.queue.core.windows.net/export-runs"
    assert tables.url == "https://stkseabc.table.core.windows.net"
    assert isinstance(blobs.credential, ManagedIdentityCredential)
    assert blobs.credential is queue.credential  # one identity, one token cache
    assert settings.segments_storage == storage  # SegmentsStorage unset: the app's own account


def test_service_uris_locate_a_separate_segments_account():
    settings = Settings.from_env(
        {
            "AzureWebJobsStorage__accountName": "stkseabc",
            "AzureWebJobsStorage__credential": "managedidentity",
            "AzureWebJobsStorage__clientId": CLIENT_ID,
            "SegmentsStorage__blobServiceUri": "https://lake.blob.core.windows.net",
            "SegmentsStorage__queueServiceUri": "https://lake.queue.core.windows.net",
            "SegmentsStorage__credential": "managedidentity",
            "SegmentsStorage__clientId": CLIENT_ID,
        }
    )
    segments = settings.segments_storage

    assert (segments.setting, segments.blob_url, segments.queue_url) == (
        "SegmentsStorage",
        "https://lake.blob.core.windows.net",
        "https://lake.queue.core.windows.net",
    )
    assert blob_service(segments).url == "https://lake.blob.core.windows.net/"
    with pytest.raises(ValueError, match="SegmentsStorage__tableServiceUri"):
        table_service(segments)


def test_without_credential_managedidentity_the_default_credential_chain_signs_in():
    settings = Settings.from_env({"AzureWebJobsStorage__blobServiceUri": "https://stkseabc.blob.core.windows.net"})

    assert not settings.storage.managed_identity
    assert isinstance(blob_service(settings.storage).credential, DefaultAzureCredential)
    with pytest.raises(ValueError, match="AzureWebJobsStorage__queueServiceUri"):
        queue_client(settings.storage, "export-runs")


def test_the_connection_string_wins_over_identity_settings_of_the_same_name():
    settings = Settings.from_env(
        {"SegmentsStorage": CONNECTION_STRING, "SegmentsStorage__accountName": "other", "AzureWebJobsStorage": "x=y"}
    )

    assert settings.segments_storage.connection_string == CONNECTION_STRING
    assert settings.segments_storage.blob_url == ""


def test_no_storage_setting_is_refused_naming_the_setting():
    settings = Settings.from_env({"LOCAL_KLAVIYO_API_KEY": "pk_local"})

    assert not settings.storage.configured
    with pytest.raises(RuntimeError, match="AzureWebJobsStorage"):
        Services.from_settings(settings)
    with pytest.raises(ValueError, match="AzureWebJobsStorage__accountName"):
        blob_service(settings.storage)


@pytest.mark.parametrize(
    ("value", "scale"),
    [("", 1.0), ("published", 1.0), ("Published", 1.0), ("off", math.inf), ("2", 2.0), ("0.5", 0.5)],
)
def test_klaviyo_rate_limits_default_to_the_published_ones_and_can_be_lifted_or_scaled(value: str, scale: float):
    env = {"KLAVIYO_RATE_LIMITS": value} if value else {}
    assert Settings.from_env(env).klaviyo_rate_limit_scale == scale


@pytest.mark.parametrize("value", ["none", "0", "-1", "inf", "nan", "10x"])
def test_a_klaviyo_rate_limits_value_that_means_nothing_is_refused_naming_the_setting(value: str):
    with pytest.raises(ValueError, match="KLAVIYO_RATE_LIMITS"):
        Settings.from_env({"KLAVIYO_RATE_LIMITS": value})
