"""azd postdown hook (azure.yaml): gives the environment's next Key Vault a name no deleted vault holds.

The vault has purge protection, so `azd down` (even with --purge) leaves it soft-deleted for 90 days,
and its name with it: "You won't be able to reuse the name of a key vault ... that exists in the
soft-deleted state" (https://learn.microsoft.com/azure/key-vault/general/soft-delete-change). The name
is derived from the subscription, the environment name and the region (infra/main.bicep), so a later
`azd up` of the same environment would ask for the same name and fail. After every `azd down` this hook
stores a new random KEY_VAULT_SUFFIX in the azd environment; main.bicep appends it to the vault's name.
While the environment lives the value stays put, so `azd provision` keeps updating the same vault.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
from collections.abc import Sequence

SETTING = "KEY_VAULT_SUFFIX"
SUFFIX_CHARS = 4  # main.bicep: @maxLength(4); vault names are at most 24 characters


def new_suffix() -> str:
    """Four lowercase hex digits: letters and digits are valid at the end of a vault name."""
    return secrets.token_hex(SUFFIX_CHARS // 2)


def main(argv: Sequence[str] | None = None) -> int:
    del argv
    azd = shutil.which("azd")
    if azd is None:
        print(f"new-vault-suffix: azd is not on PATH; run `azd env set {SETTING} <4 letters or digits>`")
        return 1
    suffix = new_suffix()
    if subprocess.run([azd, "env", "set", SETTING, suffix], check=False).returncode != 0:
        print(f"new-vault-suffix: `azd env set {SETTING}` failed; set it by hand before the next `azd up`")
        return 1
    print(
        f"{SETTING}={suffix}: the next `azd up` of this environment creates a new Key Vault; the deleted one "
        'stays recoverable for 90 days (`az keyvault recover`, README "After deploying")'
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
