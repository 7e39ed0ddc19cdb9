"""azd prepackage hook of the `api` service (azure.yaml): installs requirements.txt for the Functions
host's Linux Python into .python_packages/lib/site-packages, which azd then zips with the code and
deploys as is (`remoteBuild: false`).

Why not the default remote build: "Remote build has a 60-second timeout: If dependency installation
exceeds the limit, the build fails" (https://learn.microsoft.com/azure/azure-functions/python-build-options,
"Deployment package considerations"), and these dependencies are 69 wheels, 137 MB to download and
442 MB installed (pyarrow 170 MB, deltalake 129 MB, numpy 73 MB with its libraries, phonenumbers 48 MB):
the install alone took 11 s (18 s compiling bytecode) from a local package index on a 2-core machine,
before any download from PyPI. A remote build would pick these same manylinux wheels, so building here
assumes nothing more of the host's Linux than the remote build does.
A local build is the documented way out ("Local build": `pip install --target
.python_packages/lib/site-packages -r requirements.txt`); `--platform`, `--python-version` and
`--only-binary=:all:` make pip pick the Linux wheels of the app's Python (3.11,
infra/app/function.bicep) on any machine, Windows and macOS included, and never compile anything locally.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
TARGET = ROOT / ".python_packages" / "lib" / "site-packages"
REQUIREMENTS = ROOT / "requirements.txt"
# The Functions runtime's Python (functionAppConfig.runtime.version in infra/app/function.bicep;
# tests/test_hooks.py checks they agree).
PYTHON_VERSION = "3.11"
# glibc-based x86-64 Linux wheels, newest tag first: numpy 2.4 ships manylinux_2_27 wheels, pyarrow and
# deltalake manylinux_2_28, the rest manylinux2014 (= manylinux_2_17). pip does not widen an explicit
# --platform to older tags by itself, so each is named.
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def pip_command(python: str, requirements: Path = REQUIREMENTS, target: Path = TARGET) -> list[str]:
    """The pip command line of the local build."""
    command = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    command += ["--target", str(target), "--requirement", str(requirements)]
    command += ["--only-binary=:all:", "--implementation", "cp", "--python-version", PYTHON_VERSION]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    # No bytecode: .funcignore leaves every __pycache__ out of the package (bytecode of the local Python
    # could be of another version), so compiling would only cost build time.
    command.append("--no-compile")
    return command


def tree_size(path: Path) -> tuple[int, int]:
    """Bytes and files under `path`."""
    total = files = 0
    for folder, _dirs, names in os.walk(path):
        for name in names:
            total += (Path(folder) / name).stat().st_size
            files += 1
    return total, files


def main(argv: Sequence[str] | None = None) -> int:
    del argv
    shutil.rmtree(TARGET.parent.parent, ignore_errors=True)  # .python_packages: no package left from before
    command = pip_command(sys.executable)
    print(f"building the package's dependencies for Linux, Python {PYTHON_VERSION}: {TARGET.relative_to(ROOT)}")
    if subprocess.run(command, check=False).returncode != 0:
        print(
            "build-package: pip could not install requirements.txt as Linux wheels (see above); "
            "every pinned package needs a wheel for CPython 3.11 on manylinux x86-64",
            file=sys.stderr,
        )
        return 1
    size, files = tree_size(TARGET)
    print(f"dependencies: {size / 1e6:.0f} MB in {files} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
