"""Every row of docs/bad-inputs.md, run and checked: exit status, the one-line message, and
that nothing was lost (the cases live in tests/bad_inputs.py, which also writes the page)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bad_inputs import CASES, Workspace


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    workspace = Workspace(tmp_path_factory.mktemp("bad-inputs"))
    with workspace.inside():
        workspace.trained()
    yield workspace
    torch.set_num_threads(threads)


@pytest.mark.parametrize("case", [c for c in CASES if c.covered_by is None],
                         ids=lambda c: c.id)
def test_bad_input(case, ws, monkeypatch):
    monkeypatch.chdir(ws.root)
    outcome = case.run(ws)
    assert outcome.code == case.code, (case.id, outcome.code, outcome.err)
    assert case.expect in outcome.line, (case.id, outcome.line)
    case.verify(ws, outcome)  # and: one line, no traceback, nothing lost (the case's check)


def test_cases_left_to_other_tests_exist():
    root = Path(__file__).parent.parent
    for case in CASES:
        if case.covered_by is not None:
            path, name = case.covered_by.split("::")
            assert f"def {name}(" in (root / path).read_text(), case.covered_by


def test_the_docs_page_lists_every_case():
    page = (Path(__file__).parent.parent / "docs" / "bad-inputs.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) - 1 == len(CASES)  # minus the header
    for case in CASES:
        assert case.what in page, case.id
