"""The docs' Python quickstart examples, run as written, with only GOOGLE_GEMINI_BASE_URL and GEMINI_API_KEY set."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import SHARED

DOCS = SHARED / "reference" / "gemini-docs.txt"


def python_quickstarts() -> list[str]:
    blocks = re.findall(r"### Python\n\n((?:    .*\n|\n)+)", DOCS.read_text())
    code = [re.sub(r"^    ", "", b, flags=re.M) for b in blocks]
    return [c for c in code if "from google import genai" in c and "Explain how AI works in a few words" in c]


EXAMPLES = python_quickstarts()


def test_docs_have_quickstarts():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("code", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
def test_python_quickstart_runs_unchanged(server, code):
    code = code.replace('<var translate="no">YOUR_API_KEY</var>', server.api_key)  # the explicit-key example
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "GEMINI_"))}
    env.update(GOOGLE_GEMINI_BASE_URL=server.base_url, GEMINI_API_KEY=server.api_key)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Explain how AI works in a few words" in result.stdout  # the emulator's reply quotes the prompt
