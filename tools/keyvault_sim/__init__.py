"""Local HTTPS Azure Key Vault simulator for tests and the demo (see server.py for client setup)."""

from .server import (
    DEFAULT_TENANT_ID,
    DEFAULT_TOKEN,
    KEYVAULT_RESOURCE,
    KEYVAULT_SCOPE,
    LocalKeyVault,
    SeenRequest,
    StaticTokenCredential,
    TokenRequest,
)

__all__ = [
    "DEFAULT_TENANT_ID",
    "DEFAULT_TOKEN",
    "KEYVAULT_RESOURCE",
    "KEYVAULT_SCOPE",
    "LocalKeyVault",
    "SeenRequest",
    "StaticTokenCredential",
    "TokenRequest",
]
