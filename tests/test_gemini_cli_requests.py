"""Requests shaped as the Gemini CLI sends them (seen by running @google/gemini-cli against Pollux with only
GOOGLE_GEMINI_BASE_URL and GEMINI_API_KEY set): its router's classifier and its first agent turn."""

from __future__ import annotations

import json

import httpx

TOOLS = [{"functionDeclarations": [
    {"name": "list_directory", "description": "Lists the files in a directory.",
     "parametersJsonSchema": {"type": "object", "properties": {"dir_path": {"type": "string"}},
                              "required": ["dir_path"]}},
    {"name": "web_search", "description": "Searches the web.",
     "parametersJsonSchema": {"type": "object", "properties": {"query": {"type": "string"}},
                              "required": ["query"]}},
]}]
# The CLI's first user turn: its context (date, directories) as one part, then the prompt.
CONTEXT = ("<context>\nToday is Sunday. The working directory is /home/me/project.\n- Directory Structure:\n"
           "/home/me/project/\n  notes.txt\n</context>")


def _post(server, model: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1beta/models/{model}:generateContent", json=body, timeout=60,
                      headers={"x-goog-api-key": server.api_key})


def test_a_json_schema_with_geminis_upper_case_type_names(server):
    # The CLI's classifier writes responseJsonSchema with Gemini's Type names, which the real API reads.
    schema = {"type": "OBJECT", "properties": {
        "reasoning": {"type": "STRING", "description": "Why."},
        "score": {"type": "INTEGER", "description": "From 1 to 100."},
        "tags": {"type": "ARRAY", "items": {"type": "STRING", "enum": ["STRING", "OTHER"]}}},
        "required": ["reasoning", "score", "tags"]}
    r = _post(server, "gemini-3.5-flash-lite", {
        "contents": [{"role": "user", "parts": [{"text": "Rate this request: fix the typo in notes.txt"}]}],
        "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": schema,
                             "thinkingConfig": {"includeThoughts": True, "thinkingLevel": "HIGH"}}})
    assert r.status_code == 200, r.text
    answer = json.loads("".join(p["text"] for p in r.json()["candidates"][0]["content"]["parts"]
                                if not p.get("thought")))
    assert isinstance(answer["reasoning"], str) and isinstance(answer["score"], int)
    assert set(answer["tags"]) <= {"STRING", "OTHER"}  # an enum's values are values, not type names


def test_context_before_the_prompt_does_not_call_the_functions_it_mentions(server):
    body = {"contents": [{"role": "user", "parts": [{"text": CONTEXT},
                                                     {"text": "Explain how AI works in a few words"}]}],
            "tools": TOOLS}
    r = _post(server, "gemini-3.1-pro-preview", body)
    assert r.status_code == 200, r.text
    parts = r.json()["candidates"][0]["content"]["parts"]
    assert not [p for p in parts if "functionCall" in p] and "".join(p.get("text", "") for p in parts)


def test_the_prompt_itself_still_calls_what_it_names(server):
    body = {"contents": [{"role": "user", "parts": [{"text": CONTEXT},
                                                     {"text": "List the directory /home/me/project"}]}],
            "tools": TOOLS}
    r = _post(server, "gemini-3.1-pro-preview", body)
    assert r.status_code == 200, r.text
    calls = [p["functionCall"] for p in r.json()["candidates"][0]["content"]["parts"] if "functionCall" in p]
    assert [c["name"] for c in calls] == ["list_directory"]


def test_a_call_sets_the_required_arguments_and_leaves_the_options(server):
    # The CLI's read_file takes a path and optional line bounds: a random start_line past end_line fails the tool.
    read_file = {"name": "read_file", "description": "Reads a file.", "parametersJsonSchema": {
        "type": "object", "required": ["file_path"], "properties": {
            "file_path": {"type": "string"}, "start_line": {"type": "integer"}, "end_line": {"type": "integer"}}}}
    body = {"contents": [{"role": "user", "parts": [{"text": CONTEXT},
                                                     {"text": "Read the file /home/me/project/notes.txt"}]}],
            "tools": [{"functionDeclarations": [read_file]}]}
    r = _post(server, "gemini-3.1-pro-preview", body)
    assert r.status_code == 200, r.text
    calls = [p["functionCall"] for p in r.json()["candidates"][0]["content"]["parts"] if "functionCall" in p]
    assert [(c["name"], c["args"]) for c in calls] == [("read_file", {"file_path": "/home/me/project/notes.txt"})]
