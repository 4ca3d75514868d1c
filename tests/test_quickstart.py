"""The Python quickstart, in the forms the Gemini docs give it, run as a user writes it: a plain `google-genai`
program that names no server, with only GOOGLE_GEMINI_BASE_URL and GEMINI_API_KEY set (or, for the form that passes
its key in code, only the key placeholder filled in).

The docs give three forms of the same call, `client.models.generate_content(model="gemini-2.5-flash", contents=<a
string>)` then `print(response.text)`: two with `genai.Client()` reading the key from the environment (keyword
arguments on several lines; on one line, under a comment) and one with `genai.Client(api_key=...)`. The programs
below are this project's own, one per form, each with its own prompt.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

KEY_PLACEHOLDER = "YOUR_API_KEY"  # what a user replaces with their key in the explicit-key form

# (id, prompt, program): each program prints the answer to its prompt.
EXAMPLES = [
    ("key_from_env", "Say in one sentence what a compiler does", '''\
from google import genai

client = genai.Client()

answer = client.models.generate_content(
    model="gemini-2.5-flash",
    contents="Say in one sentence what a compiler does",
)

print(answer.text)
'''),
    ("key_from_env_one_line", "Describe photosynthesis for a child", '''\
from google import genai

# No key in the code: genai.Client() takes it from GEMINI_API_KEY.
client = genai.Client()

reply = client.models.generate_content(model="gemini-2.5-flash", contents="Describe photosynthesis for a child")
print(reply.text)
'''),
    ("key_in_code", "Why do bicycles stay upright when moving", f'''\
from google import genai

client = genai.Client(api_key="{KEY_PLACEHOLDER}")

result = client.models.generate_content(
    model="gemini-2.5-flash", contents="Why do bicycles stay upright when moving"
)
print(result.text)
'''),
]


@pytest.mark.parametrize(("prompt", "code"), [(p, c) for _, p, c in EXAMPLES], ids=[i for i, _, _ in EXAMPLES])
def test_python_quickstart_runs_unchanged(server, prompt, code):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "GEMINI_"))}
    env.update(GOOGLE_GEMINI_BASE_URL=server.base_url)
    if KEY_PLACEHOLDER in code:
        code = code.replace(KEY_PLACEHOLDER, server.api_key)  # the key is in the code, not the environment
    else:
        env.update(GEMINI_API_KEY=server.api_key)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert prompt in result.stdout  # the emulator's reply quotes the prompt
