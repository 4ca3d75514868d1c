"""What a new user meets first: `--version` and `--help`, the start banner, a port in use, the access log, models
that cannot load (offline hub ids, wrong directories), install hints, and gzip on JSON responses."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest
from conftest import Server, start_server

ROOT = Path(__file__).resolve().parents[1]
ACCESS = re.compile(r"INFO pollux\.access: (\S+) ([A-Z]+) (\S+) (\d{3}) (\d+\.\d) ms(.*)$")


def pollux(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pollux.cli", *args], check=False, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=timeout)


def access_lines(log: str) -> list[tuple[str, str, int, str]]:
    """(method, target, status, note) of each access log line."""
    return [(m[2], m[3], int(m[4]), m[6]) for m in map(ACCESS.search, log.splitlines()) if m]


def settled(srv: Server) -> str:
    """The log once every request answered so far has its line. A line is written right after its response's last
    byte, with no await in between, so the server cannot answer another request before it: one more answered
    request is the barrier (no sleeping)."""
    assert httpx.get(f"{srv.base_url}/healthz").status_code == 200
    return srv.log()


# --version and --help ------------------------------------------------------------------------------------------------
def test_version_is_the_installed_version():
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    # Run from elsewhere than the checkout: its stray pollux.egg-info must not be what is read.
    for cwd in (ROOT, Path("/")):
        result = pollux("--version", cwd=cwd)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"pollux {expected}"


def _option_entries(help_text: str) -> dict[str, str]:
    """Each option of a --help ("options:" section) with its help text, wrapped lines joined."""
    section = help_text.split("options:", 1)[1]
    entries: dict[str, str] = {}
    name = None
    for line in section.splitlines():
        match = re.match(r"  (-\S+?)[ ,\n]", line + "\n")
        if match:
            name = match.group(1)
            entries[name] = line
        elif name and line.startswith("    "):
            entries[name] += " " + line.strip()
        elif line and not line.startswith(" "):
            break
    return entries


@pytest.mark.parametrize("command", [["serve"], ["keys", "create"], ["keys", "list"], ["keys", "revoke"],
                                     ["projects", "create"], ["projects", "list"], ["projects", "rename"],
                                     ["projects", "delete"]])
def test_every_option_help_shows_its_default(command):
    result = pollux(*command, "--help")
    assert result.returncode == 0, result.stderr
    entries = _option_entries(result.stdout)
    assert "--data-dir" in entries and "--config" in entries, result.stdout
    if command == ["serve"]:
        assert {"--host", "--port", "--fixtures", "--log-level", "--model"} <= set(entries), result.stdout
        assert "(default: 127.0.0.1)" in entries["--host"] and "(default: 8080)" in entries["--port"]
    for option, text in entries.items():
        if option != "-h":
            assert "default" in text, (option, text)


@pytest.mark.parametrize("group,commands", [("projects", ["create", "list", "rename", "delete"]),
                                            ("keys", ["create", "list", "revoke"])])
def test_group_help_lists_its_commands_with_what_they_do(group, commands):
    result = pollux(group, "--help")
    assert result.returncode == 0, result.stderr
    for command in commands:
        # Each on a line of its own with a description, not only inside "{create,list,...}".
        assert re.search(rf"^\s+{command}\s+\S", result.stdout, re.MULTILINE), (command, result.stdout)


# Start: the banner, a port in use -------------------------------------------------------------------------------------
def test_every_start_prints_the_base_url_and_a_restart_says_how_to_get_a_key(tmp_path):
    data = tmp_path / "data"
    with start_server(data) as first:
        assert f"export GOOGLE_GEMINI_BASE_URL={first.base_url}\n" in first.log()
        assert first.api_key.startswith("AIza"), first.log()
    with start_server(data) as second:
        log = second.log()
        assert f"export GOOGLE_GEMINI_BASE_URL={second.base_url}\n" in log, log
        assert "export GEMINI_API_KEY" not in log, log  # only the key's hash is stored: no key to show
        assert "`pollux keys create`" in log, log
        # The banner comes before the line that says the server serves.
        assert log.index("export GOOGLE_GEMINI_BASE_URL") < log.index("Pollux serves the Gemini API"), log


def test_a_port_in_use_stops_serve_before_it_says_it_serves(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data = tmp_path / "data"
        result = pollux("serve", "--port", str(port), "--data-dir", str(data))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"port {port} is already in use" in output and "--port" in output, output
    assert "Pollux serves" not in output and "export" not in output and "Traceback" not in output, output
    assert not (data / "pollux.db").exists()  # checked before anything was created (or a first key printed, lost)


# The access log -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with start_server(tmp_path_factory.mktemp("first-contact") / "data") as server:
        yield server


def test_one_access_line_per_request_with_no_key(srv):
    r = httpx.get(f"{srv.base_url}/v1beta/models/gemini-2.5-flash?key={srv.api_key}")
    assert r.status_code == 200, r.text
    missing = httpx.get(f"{srv.base_url}/v1beta/models/no-such-model", headers={"x-goog-api-key": srv.api_key})
    assert missing.status_code == 404
    log = settled(srv)
    assert srv.api_key not in log.split("Pollux serves", 1)[1], log  # the banner shows it; nothing after it
    lines = access_lines(log)
    assert lines.count(("GET", "/v1beta/models/gemini-2.5-flash?key=REDACTED", 200, "")) == 1, log
    assert lines.count(("GET", "/v1beta/models/no-such-model", 404, "")) == 1, log
    assert "HTTP/1.1" not in log, log  # uvicorn's own access log is off: one line per request, not two


def test_an_upload_is_logged_without_its_capability(srv):
    content = b"first contact " * 100
    start = httpx.post(f"{srv.base_url}/upload/v1beta/files?key={srv.api_key}", headers={
        "X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start",
        "X-Goog-Upload-Header-Content-Length": str(len(content)),
        "X-Goog-Upload-Header-Content-Type": "text/plain"}, json={"file": {"display_name": "access-log"}})
    assert start.status_code == 200, start.text
    url = start.headers["x-goog-upload-url"]
    upload_id = httpx.URL(url).params["upload_id"]
    done = httpx.post(url, headers={"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"},
                      content=content)
    assert done.status_code == 200, done.text
    log = settled(srv)
    assert upload_id not in log and srv.api_key not in log.split("Pollux serves", 1)[1], log
    lines = access_lines(log)
    assert ("POST", "/upload/v1beta/files?key=REDACTED", 200, "") in lines, log
    assert ("POST", "/upload/v1beta/files?upload_id=REDACTED&upload_protocol=resumable", 200, "") in lines, log


def test_a_stream_is_logged_when_it_ends_and_prompts_never(srv):
    prompt = "a prompt that must stay out of logs 8e1f"
    url = f"{srv.base_url}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key={srv.api_key}"
    with httpx.stream("POST", url, json={"contents": [{"parts": [{"text": prompt}]}]}) as r:
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert r.status_code == 200 and events
    log = settled(srv)
    assert prompt not in log, log
    assert access_lines(log).count(
        ("POST", "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key=REDACTED", 200, "")) == 1, log


# Models that cannot load ---------------------------------------------------------------------------------------------
def _serve_fails(tmp_path: Path, source: str, **env: str) -> str:
    """`pollux serve --model gemini-2.5-flash=SOURCE`, which must exit non-zero with one message and no traceback."""
    result = pollux("serve", "--port", "0", "--data-dir", str(tmp_path / "data"),
                    "--model", f"gemini-2.5-flash={source}", env=env)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output and "Pollux serves" not in output, output
    return output


def test_an_uncached_hub_id_offline_fails_at_once_with_what_to_do(tmp_path):
    # HF_HUB_OFFLINE: no network is tried; the empty cache has nothing.
    output = _serve_fails(tmp_path, "hf:pollux-test/not-downloaded", HF_HUB_OFFLINE="1",
                          HF_HUB_CACHE=str(tmp_path / "hub"))
    errors = [line for line in output.splitlines() if line.startswith("pollux:")]
    assert len(errors) == 1, output
    assert "HF_HUB_OFFLINE" in errors[0] and "hf download pollux-test/not-downloaded" in errors[0], output
    assert "local directory" in errors[0], output
    assert "Retry" not in output and "couldn't connect" not in output, output  # no retries, no second explanation


# A hub endpoint that refuses connections at once: the hub unreachable, whatever this machine's network.
UNREACHABLE = "http://127.0.0.1:1"


def test_an_uncached_hub_id_with_the_hub_unreachable_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    output = _serve_fails(tmp_path, "hf:pollux-test/not-downloaded", HF_ENDPOINT=UNREACHABLE,
                          HF_HUB_CACHE=str(tmp_path / "hub"))
    errors = [line for line in output.splitlines() if line.startswith("pollux:")]
    assert len(errors) == 1, output
    assert "cannot be reached" in errors[0] and "hf download pollux-test/not-downloaded" in errors[0], output
    assert "HF_HUB_OFFLINE=1" in errors[0], output
    assert "Retry" not in output, output


def _hub_cache(cache: Path, repo: str, model_dir: Path) -> None:
    """`model_dir` laid out as huggingface_hub caches a download of `repo` (what `hf download` leaves)."""
    commit = "0" * 40
    folder = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(model_dir, folder / "snapshots" / commit)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": UNREACHABLE}],
                         ids=["HF_HUB_OFFLINE", "hub-unreachable"])
def test_a_cached_hub_id_serves_offline(tmp_path, monkeypatch, env):
    """The check that fails uncached ids at once lets a cached one through to transformers; with the hub unreachable
    (and HF_HUB_OFFLINE unset) it is read from the cache at once, not after minutes of retries."""
    pytest.importorskip("transformers")
    import tiny_models

    _hub_cache(tmp_path / "hub", "pollux-test/tiny-llama", tiny_models.build_llama(tiny_models.models_root()))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for name, value in {**env, "HF_HUB_CACHE": str(tmp_path / "hub")}.items():
        monkeypatch.setenv(name, value)  # start_server passes its environment on
    with start_server(tmp_path / "data", "--model", "gemini-2.5-flash=hf:pollux-test/tiny-llama") as hf:
        r = httpx.post(f"{hf.base_url}/v1beta/models/gemini-2.5-flash:generateContent",
                       headers={"x-goog-api-key": hf.api_key}, timeout=120,
                       json={"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 2}})
        assert r.status_code == 200, r.text
        log = hf.log()
        assert "loading pollux-test/tiny-llama" in log and "Retry" not in log, log
        assert log.count("the Hugging Face hub cannot be reached") == ("HF_ENDPOINT" in env), log


def _model_dir(path: Path, *files: str) -> Path:
    path.mkdir()
    for name in files:
        (path / name).write_text("{}")
    return path


@pytest.mark.parametrize("files,says", [
    ((), "is empty: not a model directory"),
    (("tokenizer.json", "model.safetensors"), "has no config.json: not a transformers model directory"),
    (("config.json", "tokenizer.json", "tokenizer_config.json"), "has no weights"),
    (("config.json", "model.safetensors", "generation_config.json"), "has no tokenizer files"),
])
def test_a_wrong_model_directory_says_what_it_lacks(tmp_path, files, says):
    model = _model_dir(tmp_path / "model", *files)
    output = _serve_fails(tmp_path, str(model))
    assert f"pollux: {model} {says}" in output, output


def test_a_missing_model_directory_or_a_file(tmp_path):
    assert "does not exist" in _serve_fails(tmp_path, str(tmp_path / "nowhere"))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    assert "is a file, not a model directory" in _serve_fails(tmp_path, str(weights))


# Install hints --------------------------------------------------------------------------------------------------------
def test_install_hint_names_this_checkout_when_installed_from_it(tmp_path):
    from importlib import metadata

    records = [json.loads(d.read_text("direct_url.json") or "null") for d in metadata.distributions(name="pollux")]
    if not any(r and r.get("url") == ROOT.as_uri() and r.get("dir_info", {}).get("editable") for r in records):
        pytest.skip("this Pollux is not an editable install of this checkout")
    code = "from pollux.engines.loading import install_hint; print(install_hint('transformers'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert result.stdout.strip() == f"pip install -e '{ROOT}[transformers]'"


class _FakeDist:
    """A distribution as importlib.metadata gives it, installed as `direct_url` says."""

    def __init__(self, direct_url: dict | None) -> None:
        self._direct_url = direct_url
        self.requires = ['torch>=2.4; extra == "transformers"', 'transformers<5.25,>=5.24; extra == "transformers"',
                         'diffusers<0.43,>=0.30; extra == "images"', "numpy>=1.26"]

    def read_text(self, name: str) -> str | None:
        return json.dumps(self._direct_url) if name == "direct_url.json" and self._direct_url else None


@pytest.mark.parametrize("direct_url,hint", [
    ({"url": "file:///src/pollux", "dir_info": {"editable": True}}, "pip install -e '/src/pollux[transformers]'"),
    ({"url": "file:///src/pollux", "dir_info": {}}, "pip install '/src/pollux[transformers]'"),
    ({"url": "https://github.com/o/pollux", "vcs_info": {"vcs": "git", "commit_id": "abc123"}},
     "pip install 'pollux[transformers] @ git+https://github.com/o/pollux@abc123'"),
    ({"url": "file:///w/pollux-0.1.0-py3-none-any.whl", "archive_info": {}},
     "pip install 'pollux[transformers] @ file:///w/pollux-0.1.0-py3-none-any.whl'"),
    # From a package index: never `pollux[...]`, which on PyPI is another project; the extra's requirements.
    (None, "pip install 'torch>=2.4' 'transformers<5.25,>=5.24'"),
])
def test_install_hint_follows_how_pollux_was_installed(monkeypatch, direct_url, hint):
    import pollux
    from pollux.engines.loading import install_hint

    monkeypatch.setattr(pollux, "distribution", lambda: _FakeDist(direct_url))
    assert install_hint("transformers") == hint


# gzip -----------------------------------------------------------------------------------------------------------------
def test_a_large_json_response_is_gzipped_when_accepted(srv):
    url = f"{srv.base_url}/v1beta/models"
    with httpx.stream("GET", url, headers={"x-goog-api-key": srv.api_key, "accept-encoding": "gzip"}) as r:
        raw = b"".join(r.iter_raw())
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    assert int(r.headers["content-length"]) == len(raw) and "accept-encoding" in r.headers["vary"].lower()
    models = json.loads(gzip.decompress(raw))["models"]
    # Without Accept-Encoding (http.client sends none when told to skip it), the same bytes, uncompressed.
    host, port = srv.base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.putrequest("GET", "/v1beta/models", skip_accept_encoding=True)
    conn.putheader("x-goog-api-key", srv.api_key)
    conn.endheaders()
    plain = conn.getresponse()
    assert plain.getheader("content-encoding") is None
    plain_body = plain.read()
    conn.close()
    assert json.loads(plain_body)["models"] == models
    assert len(raw) < len(plain_body) and len(plain_body) > 1024
    # Refused explicitly: identity.
    r = httpx.get(url, headers={"x-goog-api-key": srv.api_key, "accept-encoding": "gzip;q=0, identity"})
    assert "content-encoding" not in r.headers and r.json()["models"] == models


def test_a_small_response_is_not_gzipped(srv):
    r = httpx.get(f"{srv.base_url}/v1beta/models/no-such-model",
                  headers={"x-goog-api-key": srv.api_key, "accept-encoding": "gzip"})
    assert r.status_code == 404 and len(r.content) < 1024
    assert "content-encoding" not in r.headers


def test_the_sdks_decode_gzip(srv):
    from google import genai
    from google.genai import types

    encodings: list[str | None] = []
    client = genai.Client(api_key=srv.api_key, http_options=types.HttpOptions(
        base_url=srv.base_url, client_args={"event_hooks": {"response": [
            lambda response: encodings.append(response.headers.get("content-encoding"))]}}))
    names = [m.name for m in client.models.list()]
    assert "models/gemini-2.5-flash" in names and "gzip" in encodings, encodings
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node for the fetch check")
    script = ("const r = await fetch(process.argv[1], {headers: {'x-goog-api-key': process.argv[2]}});"
              "const body = await r.json();"
              "console.log(JSON.stringify({encoding: r.headers.get('content-encoding'), "
              "names: body.models.map(m => m.name)}));")
    result = subprocess.run([node, "--input-type=module", "-e", script, f"{srv.base_url}/v1beta/models",
                             srv.api_key], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["encoding"] == "gzip" and "models/gemini-2.5-flash" in seen["names"], seen


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    """The emulator takes 0.3 s per chunk, so a client can leave while its stream is still being generated."""
    with start_server(tmp_path_factory.mktemp("slow") / "data", config="[emulator]\nstream_delay = 0.3\n") as server:
        yield server


@pytest.mark.parametrize("query,first", [("alt=sse&", "data: "), ("", "[")])
def test_streams_are_not_held_back_by_compression(slow, query, first):
    """The first chunk reaches a gzip-accepting client while the model is still generating: the client reads it
    and leaves, and the server sees the generation cancelled. Were the stream buffered (to compress it), the first
    chunk would come only once the generation had ended, and nothing would be cancelled."""
    cancelled = slow.log().count("emulator generation cancelled")
    url = f"{slow.base_url}/v1beta/models/gemini-2.5-flash:streamGenerateContent?{query}key={slow.api_key}"
    # Thoughts shown: hidden ones would be generated (paced) before the first chunk.
    body = {"contents": [{"parts": [{"text": "Tell me a long story"}]}],
            "generationConfig": {"thinkingConfig": {"includeThoughts": True}}}
    with httpx.stream("POST", url, json=body, headers={"accept-encoding": "gzip"}, timeout=30) as r:
        assert r.status_code == 200
        assert "content-encoding" not in r.headers  # each chunk goes as it is made
        assert next(r.iter_text()).lstrip().startswith(first)
    assert slow.logged("emulator generation cancelled", cancelled + 1), slow.log()
    # The access line comes when the stream ends, cut short by the client.
    path = f"/v1beta/models/gemini-2.5-flash:streamGenerateContent?{query}key=REDACTED"
    assert slow.logged(f"POST {path} 200 ", 1)
    lines = [line for line in access_lines(slow.log()) if line[1] == path]
    assert lines and "cut short" in lines[-1][3], slow.log()
