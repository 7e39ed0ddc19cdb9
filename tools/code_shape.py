"""Checks the shape of the app's code (run by `make lint`, so by CI): no module over 400 lines, no
class over 200, no function over 60, and no import cycle between the modules of `shared/`.

Data literals are not code to read line by line: the functions listed in LONG_DATA_LITERALS may be
longer, each with the reason."""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import grimp

MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 200
MAX_FUNCTION_LINES = 60
LONG_DATA_LITERALS = {
    "shared/control/openapi.py:_paths": "the OpenAPI paths table: one literal, an entry per operation",
}
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Finding:
    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


def oversized(path: Path, root: Path = ROOT) -> list[Finding]:
    """The module itself, and each class and function in it, against its limit."""
    text = path.read_text(encoding="utf-8")
    name = path.relative_to(root).as_posix()
    found: list[Finding] = []
    lines = len(text.splitlines())
    if lines > MAX_MODULE_LINES:
        found.append(Finding(name, f"module of {lines} lines (at most {MAX_MODULE_LINES})"))
    for node in ast.walk(ast.parse(text, name)):
        if isinstance(node, ast.ClassDef):
            limit, kind = MAX_CLASS_LINES, "class"
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            limit, kind = MAX_FUNCTION_LINES, "function"
        else:
            continue
        assert node.end_lineno is not None
        size = node.end_lineno - min([node.lineno, *(d.lineno for d in node.decorator_list)]) + 1
        if size > limit and f"{name}:{node.name}" not in LONG_DATA_LITERALS:
            found.append(Finding(f"{name}:{node.lineno}", f"{kind} {node.name} of {size} lines (at most {limit})"))
    return found


def import_cycles(package: str) -> list[Finding]:
    """Each pair of modules that import each other, directly or through others."""
    graph = grimp.build_graph(package)
    found: list[Finding] = []
    reported: set[frozenset[str]] = set()
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            pair = frozenset((importer, imported))
            if back and pair not in reported:
                reported.add(pair)
                found.append(Finding(importer, "import cycle: " + " -> ".join((importer, *back))))
    return found


def main() -> int:
    sys.path.insert(0, str(ROOT))
    files = sorted((ROOT / "shared").rglob("*.py")) + [ROOT / "function_app.py"]
    findings = [finding for path in files for finding in oversized(path)] + import_cycles("shared")
    for finding in findings:
        print(finding)
    print(f"code shape: {len(files)} modules checked, {len(findings)} finding(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
