"""The config file: the catalogue maps model ids to engines and limits; mistakes stop the server at start."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
import tiny_models
from conftest import start_server


def serve_with(tmp_path, config: str | None = None, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """`pollux serve` on a fresh data dir with `config` as its TOML (for starts that must fail), from a clean
    environment: no database URL from outside."""
    if config is not None:
        (tmp_path / "pollux.toml").write_text(config)
        args = ("--config", str(tmp_path / "pollux.toml"), *args)
    return subprocess.run([sys.executable, "-m", "pollux.cli", "serve", "--data-dir", str(tmp_path / "d"), *args],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "POLLUX_DATABASE_URL": ""})


def test_config_changes_and_adds_models(tmp_path):
    config = ('[models."gemini-2.5-flash"]\noutput_token_limit = 1000\n\n'
              '[models."my-model"]\nbase = "gemini-2.0-flash"\ndisplay_name = "My model"\nengine = "emulator"\n')
    with start_server(tmp_path / "data", config=config) as srv:
        headers = {"x-goog-api-key": srv.api_key}
        mine = httpx.get(f"{srv.base_url}/v1beta/models/my-model", headers=headers).json()
        assert mine["displayName"] == "My model" and mine["outputTokenLimit"] == 8192
        url = f"{srv.base_url}/v1beta/models/gemini-2.5-flash:generateContent"
        body = {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 2000}}
        assert httpx.post(url, headers=headers, json=body).status_code == 400
        reply = httpx.post(f"{srv.base_url}/v1beta/models/my-model:generateContent", headers=headers,
                           json={"contents": [{"parts": [{"text": "hi"}]}]}).json()
        assert reply["modelVersion"].startswith("my-model")


def test_bad_config_fails_at_start_with_a_message(tmp_path):
    result = serve_with(tmp_path, '[models."gemini-2.5-flash"]\nengine = "warp-drive"\n')
    assert result.returncode == 2
    assert "unknown engine 'warp-drive'" in result.stderr


@pytest.mark.parametrize("rules, message", [
    ('- match: {contains: x}\n  respond: {error: {code: "503", status: UNAVAILABLE}}\n', "error.code"),
    ('- match: {contains: x}\n  respond: {error: {code: 200, status: UNAVAILABLE}}\n', "error.code"),
    ('- match: {contains: x}\n  respond: {function_calls: [{name: f, args: [1]}]}\n', "args"),
    ('- match: {regex: "(unclosed"}\n  respond: {text: hi}\n', "bad regex"),
    ("- match: {contains: x\n  respond: [\n", "not valid YAML"),
], ids=["code-string", "code-200", "args-list", "bad-regex", "bad-yaml"])
def test_bad_fixtures_fail_at_start_with_a_message(tmp_path, rules, message):
    path = tmp_path / "rules.yaml"
    path.write_text(rules)
    result = serve_with(tmp_path, None, "--fixtures", str(path))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_limit_of_the_wrong_type_fails_at_start(tmp_path):
    result = serve_with(tmp_path, '[limits]\nmax_request_bytes = "20MB"\n')
    assert result.returncode == 2 and "positive whole number" in result.stderr


@pytest.mark.parametrize("config, message", [
    # A pattern's fields apply to each id it matches; there is no one entry to start from.
    ('[models."gemini-*"]\nbase = "gemini-2.5-flash"\n', "cannot have a base"),
    # Engines start for catalogue entries: a pattern that reaches none of them would route ids to an engine that
    # never started.
    ('[models."gemini-9*"]\nengine = "transformers"\nengine_options = {source = "/nowhere"}\n',
     "routes no model of the catalogue"),
    ('[models."gemini-*"]\nid = "other"\n', "unknown field(s) ['id']"),
], ids=["base", "no-catalogue-match", "id"])
def test_bad_model_pattern_fails_at_start(tmp_path, config, message):
    result = serve_with(tmp_path, config)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_config_entry_for_an_unlisted_gemini_id_starts_from_its_family(tmp_path):
    # No base needed: gemini-4-flash is a flash of the newest generation, listed once it has an entry.
    config = '[models."gemini-4-flash"]\noutput_token_limit = 1000\n'
    with start_server(tmp_path / "data", config=config) as srv:
        headers = {"x-goog-api-key": srv.api_key}
        mine = httpx.get(f"{srv.base_url}/v1beta/models/gemini-4-flash", headers=headers).json()
        family = httpx.get(f"{srv.base_url}/v1beta/models/gemini-3.5-flash", headers=headers).json()
        assert (mine["outputTokenLimit"], mine["inputTokenLimit"]) == (1000, family["inputTokenLimit"])
        listed = httpx.get(f"{srv.base_url}/v1beta/models?pageSize=1000", headers=headers).json()["models"]
        assert "models/gemini-4-flash" in [m["name"] for m in listed]


def test_the_store_section_places_the_database_and_the_bytes(tmp_path):
    """`[store]` in the config; the environment wins over it, and `--database-url` over both (the CLI commands read
    the same places as the server)."""
    shared = tmp_path / "elsewhere" / "state.db"
    blobs = tmp_path / "bytes"
    config = f'[store]\ndatabase_url = "sqlite:///{shared}"\nblob_url = "{blobs}"\n'
    env = {"POLLUX_DATABASE_URL": ""}  # not the Postgres pass's database: this test is about the places
    with start_server(tmp_path / "data", config=config, env=env) as srv:
        r = httpx.post(f"{srv.base_url}/upload/v1beta/files?uploadType=media", content=b"where do I go",
                       headers={"x-goog-api-key": srv.api_key, "Content-Type": "text/plain"}, timeout=30)
        assert r.status_code == 200, r.text
        assert shared.exists() and not (tmp_path / "data" / "pollux.db").exists()
        assert len(list((blobs / "files").glob("*/*"))) == 1
        listed = subprocess.run([sys.executable, "-m", "pollux.cli", "keys", "list", "--data-dir",
                                 str(tmp_path / "data"), "--config", str(tmp_path / "pollux.toml")],
                                capture_output=True, text=True, timeout=60, env={**os.environ, **env})
        assert "Default key" in listed.stdout, listed.stderr
        other = tmp_path / "other.db"
        flagged = subprocess.run([sys.executable, "-m", "pollux.cli", "projects", "list", "--data-dir",
                                  str(tmp_path / "data"), "--database-url", f"sqlite:///{other}"],
                                 capture_output=True, text=True, timeout=60, env={**os.environ, **env})
        assert flagged.returncode == 0 and other.exists() and "Default Gemini Project" not in flagged.stdout


@pytest.mark.parametrize("store, message", [
    ('[store]\ndatabase = "x"\n', "unknown store setting 'database'"),
    ('[store]\ndatabase_url = "mysql://x/y"\n', "Pollux speaks SQLite"),
    ('[store]\nblob_url = "ftp://x"\n', "blob"),
], ids=["unknown-key", "unknown-database", "unknown-blob-store"])
def test_a_bad_store_fails_at_start(tmp_path, store, message):
    result = serve_with(tmp_path, store, "--port", "0", timeout=60)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("minimum", ['"1024"', "-1", "true"])
def test_a_bad_cache_minimum_fails_at_start(tmp_path, minimum):
    result = serve_with(tmp_path, f'[models."gemini-2.5-flash"]\ncache_min_tokens = {minimum}\n', "--port", "0",
                        timeout=60)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "cache_min_tokens must be a whole number" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("option, message", [
    ("kv_cache_mb = 0", "kv_cache_mb must be a positive whole number"),
    ('max_batch_size = "32"', "max_batch_size must be a positive whole number"),
    ("max_batch_tokens = -5", "max_batch_tokens must be a positive whole number"),
    ("max_queue = -1", "max_queue must be a whole number"),
    ("media_workers = 0", "media_workers must be a positive whole number"),
    ('media_in_batch = "yes"', "media_in_batch must be true or false"),
    ("prefix_cache = 1", "prefix_cache must be true or false"),
    ('decode_attention = "paged"', 'decode_attention must be "per-request" or "library"'),
])
def test_bad_transformers_options_fail_at_start(tmp_path, option, message):
    source = tiny_models.build_llama(tiny_models.models_root())
    config = f'[models."gemini-2.5-flash"]\nengine = "transformers"\nengine_options = {{ source = "{source}", {option} }}\n'
    result = serve_with(tmp_path, config)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
