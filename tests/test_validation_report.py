"""``validation/make_report.py``: which scripts it runs, in what order, the index it writes, its
exit status; and that the committed report is complete (every script has a passing row, every
link points to a file)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

VALIDATION = Path(__file__).resolve().parents[1] / "validation"


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("make_report", VALIDATION / "make_report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _script(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("import pathlib, sys\nHERE = pathlib.Path(__file__).parent\n"
                    "with open(HERE.parent / 'order.log', 'a') as f:\n"
                    "    f.write(pathlib.Path(__file__).name + '\\n')\n" + body)


def _rows(text: str) -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"^\| `([^`]+)` \| (-?\d+) \| \d+ \|$", text, re.M)}


def test_runs_every_area_script_and_writes_the_index(report, tmp_path):
    root = tmp_path / "validation"
    _script(root / "b_area" / "make_b.py",
            "(HERE / 'README.md').write_text('# B title\\n')\n(HERE / 'b.png').write_bytes(b'png')\n")
    _script(root / "a_fail" / "make_a.py", "sys.exit(3)\n")
    _script(root / "x17" / "make_x17.py", "")
    _script(root / "_private" / "make_p.py", "")
    _script(root / ".hidden" / "make_h.py", "")

    assert report.main([], root=root) == 1  # a script failed
    order = (root / "order.log").read_text().split()
    assert order == ["make_x17.py", "make_a.py", "make_b.py"]  # x17 first (others quote it)
    text = (root / "README.md").read_text()
    assert _rows(text) == {"x17/make_x17.py": 0, "a_fail/make_a.py": 3, "b_area/make_b.py": 0}
    assert "## b_area: B title" in text
    assert "Summary: [b_area/README.md](b_area/README.md)" in text
    assert "- [b.png](b_area/b.png)" in text
    assert "a_fail:" not in text  # no README and no plot: no section
    assert not (root / "README.md.tmp").exists()

    # --only: the other scripts keep the rows of their last run; the exit status is this run's
    (root / "order.log").unlink()
    assert report.main(["--only", "b_area"], root=root) == 0
    assert (root / "order.log").read_text().split() == ["make_b.py"]
    assert _rows((root / "README.md").read_text()) == _rows(text)

    # --no-run keeps the table; a deleted script loses its row
    (root / "a_fail" / "make_a.py").unlink()
    assert report.main(["--no-run"], root=root) == 0
    assert _rows((root / "README.md").read_text()) == {"x17/make_x17.py": 0, "b_area/make_b.py": 0}


def test_committed_report_is_complete(report):
    text = (VALIDATION / "README.md").read_text()
    rows = _rows(text)
    scripts = {str(p.relative_to(VALIDATION)) for p in report._scripts(VALIDATION, [], [])}
    assert scripts, "no validation scripts found"
    assert set(rows) == scripts, "validation/README.md is stale: rerun validation/make_report.py"
    assert all(rc == 0 for rc in rows.values()), rows
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert links
    missing = [link for link in links if not (VALIDATION / link).is_file()]
    assert not missing, missing
