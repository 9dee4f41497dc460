"""Every ```python snippet of README.md runs as pasted, each in a fresh interpreter.

The one change made to a snippet: training budgets. ``.learn(<number>)`` becomes ``.learn(2_048)`` (:data:`BUDGET`),
so that a snippet showing a realistic budget (``learn(200_000)``) runs as a short check; the README says so next to
it. Snippets run in an empty temporary folder, so whatever they write stays out of the repository.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BUDGET = "2_048"
_SNIPPET = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
_LEARN = re.compile(r"\.learn\(\s*[\d_]+\s*\)")


def snippets() -> list[str]:
    return _SNIPPET.findall(README.read_text())


def with_small_budget(code: str) -> str:
    """``code`` with every ``.learn(<integer literal>)`` cut to :data:`BUDGET` steps."""
    return _LEARN.sub(f".learn({BUDGET})", code)


def test_the_readme_has_the_snippets_it_should() -> None:
    found = snippets()
    assert len(found) >= 6
    assert any(".learn(" in code for code in found), "the budget substitution would have nothing to do"


def test_budget_substitution_only_touches_learn_calls() -> None:
    code = "model = PPO(policy, env, n_steps=256).learn(200_000)\nx = f(200_000)\n"
    assert with_small_budget(code) == f"model = PPO(policy, env, n_steps=256).learn({BUDGET})\nx = f(200_000)\n"


@pytest.mark.parametrize("index", range(len(snippets())), ids=lambda i: f"snippet{i + 1}")
def test_readme_snippet_runs_as_pasted(index: int, tmp_path: Path) -> None:
    code = with_small_budget(snippets()[index])
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"snippet {index + 1} failed:\n{code}\n{result.stderr[-3000:]}"
