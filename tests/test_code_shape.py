"""The code-shape check that CI runs (tools/code_shape.py) finds what it is there to find."""

from __future__ import annotations

from tools.code_shape import MAX_FUNCTION_LINES, import_cycles, oversized


def test_a_function_one_line_past_the_limit_is_reported_and_one_at_it_is_not(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES - 1))
    (tmp_path / "fits.py").write_text("def fits():\n" + body)
    (tmp_path / "long.py").write_text("def too_long():\n" + body + "    return 0\n")

    assert oversized(tmp_path / "fits.py", tmp_path) == []
    [finding] = oversized(tmp_path / "long.py", tmp_path)
    assert finding.where == "long.py:1" and "function too_long of 61 lines" in finding.what


def test_two_modules_that_import_each_other_through_a_third_are_a_cycle(tmp_path, monkeypatch):
    package = tmp_path / "cyclic_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from cyclic_pkg import b\n")
    (package / "b.py").write_text("from cyclic_pkg import c\n")
    (package / "c.py").write_text("from cyclic_pkg import a\n")
    (package / "d.py").write_text("from cyclic_pkg import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    findings = import_cycles("cyclic_pkg")

    assert findings, "a -> b -> c -> a is a cycle"
    assert all("cyclic_pkg.d" not in f.where for f in findings), "d only imports into the cycle"
    assert any(f.what == "import cycle: cyclic_pkg.a -> cyclic_pkg.b -> cyclic_pkg.c -> cyclic_pkg.a" for f in findings)
