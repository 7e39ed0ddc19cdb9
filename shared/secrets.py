"""The Klaviyo API key from Azure Key Vault, cached briefly per process so rotations are picked up."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.keyvault.secrets import SecretClient

log = logging.getLogger(__name__)

DEFAULT_TTL_SECONDS = 300.0


class SecretError(Exception):
    """The secret could not be read; the message names the secret, never its value."""


class KeyVaultSecrets:
    """Reads secrets with the real SecretClient (DefaultAzureCredential unless given one)."""

    def __init__(
        self,
        vault_url: str,
        credential: TokenCredential | None = None,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        **client_options: Any,
    ) -> None:
        if not vault_url:
            raise SecretError("no Key Vault URL: set KEY_VAULT_URL")
        self.vault_url = vault_url
        self._credential = credential
        self._options = client_options
        self._ttl = ttl_seconds
        self._cache: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()
        self._client: SecretClient | None = None

    def _secret_client(self) -> SecretClient:
        if self._client is None:
            from azure.keyvault.secrets import SecretClient

            if self._credential is None:
                from azure.identity import DefaultAzureCredential

                self._credential = DefaultAzureCredential()
            self._client = SecretClient(self.vault_url, self._credential, **self._options)
        return self._client

    def get(self, name: str) -> str:
        with self._lock:
            cached = self._cache.get(name)
            if cached and cached[0] > time.monotonic():
                return cached[1]
        value = self._fetch(name)
        with self._lock:
            self._cache[name] = (time.monotonic() + self._ttl, value)
        return value

    def _fetch(self, name: str) -> str:
        from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

        where = f"secret {name!r} in Key Vault {self.vault_url}"
        try:
            secret = self._secret_client().get_secret(name)
        except ResourceNotFoundError:
            raise SecretError(f"{where}: not found") from None
        except ClientAuthenticationError as exc:
            raise SecretError(f"{where}: could not authenticate to Key Vault ({type(exc).__name__})") from None
        except HttpResponseError as exc:
            inner = getattr(getattr(exc, "error", None), "innererror", None) or {}
            code = inner.get("code") if isinstance(inner, dict) else None
            if exc.status_code == 403 and (code == "SecretDisabled" or "disabled" in str(exc.message).lower()):
                raise SecretError(f"{where}: the secret is disabled") from None
            if exc.status_code == 403:
                raise SecretError(
                    f"{where}: access denied (give the app's identity the 'Key Vault Secrets User' role)"
                ) from None
            raise SecretError(f"{where}: Key Vault answered {exc.status_code}") from None
        except Exception as exc:  # network, TLS: say what, not the value
            raise SecretError(f"{where}: could not be read ({type(exc).__name__})") from None
        if not secret.value:
            raise SecretError(f"{where}: the secret is empty")
        return secret.value
