"""API keys: where they are read from, the errors for a missing or bad key, and the `pollux keys|projects` CLI.

Reference: wire-protocol.md §1.2 (auth), §13 and semantics.md §13 (the real API's error bodies).
"""

from __future__ import annotations

import re
import secrets
import subprocess

import httpx
import pytest

from conftest import ON_POSTGRES, Server, refused, run_pollux, sql, start_server

KEY_RE = re.compile(r"^AIza[A-Za-z0-9_-]{35}$")
ANY_KEY_RE = re.compile(r"AIza[A-Za-z0-9_-]{35}")
MISSING_KEY = ("Method doesn't allow unregistered callers (callers without established identity). "
               "Please use API Key or other form of API consumer identity to call this API.")
INVALID_KEY = "API key not valid. Please pass a valid API key."
TIMEOUT = 15
HELLO = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}

# Every API route (all but /healthz needs a key), under each served version.
ROUTES = [
    ("GET", "/{v}/models", None),
    ("GET", "/{v}/models/gemini-2.5-flash", None),
    ("POST", "/{v}/models/gemini-2.5-flash:generateContent", HELLO),
    ("POST", "/{v}/models/gemini-2.5-flash:countTokens", HELLO),
    ("POST", "/{v}/models/gemini-2.5-flash:streamGenerateContent?alt=sse", HELLO),
    ("POST", "/{v}/models/gemini-2.5-flash:streamGenerateContent", HELLO),
    ("POST", "/{v}/models/gemini-nope:generateContent", HELLO),  # auth is checked before the model
]
ROUTE_IDS = ["models.list", "models.get", "generateContent", "countTokens", "stream-sse", "stream-json",
             "unknown-model"]


# Helpers -------------------------------------------------------------------------------------------------------------
def call(server: Server, method: str, path: str, body=None, headers: dict | None = None,
         params: dict | None = None) -> httpx.Response:
    return httpx.request(method, server.base_url + path, json=body, headers=headers or {}, params=params,
                         timeout=TIMEOUT)


def works(server: Server, key: str) -> bool:
    r = call(server, "GET", "/v1beta/models", headers={"x-goog-api-key": key})
    assert r.status_code in (200, 400), r.text
    return r.status_code == 200


def run_cli(server: Server, *args: str) -> subprocess.CompletedProcess:
    """Like `server.cli`, without raising on a non-zero exit."""
    return run_pollux(server.data_dir, *args, timeout=60)


def assert_json_error(r: httpx.Response, code: int, status: str, message: str) -> dict:
    where = f"{r.request.method} {r.request.url} -> {r.status_code}: {r.text[:600]}"
    assert r.status_code == code, where
    assert r.headers.get("content-type", "").split(";")[0].strip() == "application/json", where
    error = r.json()["error"]
    assert (error["code"], error["status"], error["message"]) == (code, status, message), where
    return error


def assert_key_invalid(r: httpx.Response) -> None:
    error = assert_json_error(r, 400, "INVALID_ARGUMENT", INVALID_KEY)
    reasons = [d.get("reason") for d in error.get("details", [])
               if d.get("@type") == "type.googleapis.com/google.rpc.ErrorInfo"]
    assert reasons == ["API_KEY_INVALID"], error


def create_key(server: Server, *args: str) -> tuple[str, str]:
    """Run `keys create ARGS`; returns (key, stdout)."""
    result = server.cli("keys", "create", *args)
    key = result.stdout.strip().splitlines()[-1].strip()
    assert KEY_RE.match(key), result.stdout
    return key, result.stdout


def key_row(listing: str, name: str) -> tuple[str, str]:
    """The (id, row) of the key named `name` in `keys list` output (names here are unique)."""
    rows = [line for line in listing.splitlines()[1:] if re.search(rf"(^|\s){re.escape(name)}(\s|$)", line)]
    assert len(rows) == 1, listing
    return rows[0].split()[0], rows[0]


def db_bytes(server: Server) -> bytes:
    """Everything the database holds: SQLite's files byte for byte; on Postgres, every row of every table."""
    if ON_POSTGRES:
        tables = [t for (t,) in sql(server, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        assert "api_keys" in tables, tables
        return repr([sql(server, f"SELECT * FROM {t}") for t in tables]).encode()
    raw = b""
    for suffix in ("", "-wal", "-shm", "-journal"):
        path = server.data_dir / f"pollux.db{suffix}"
        if path.exists():
            raw += path.read_bytes()
    return raw


# Missing and bad keys ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["v1beta", "v1"])
@pytest.mark.parametrize("method, path, body", ROUTES, ids=ROUTE_IDS)
def test_missing_key_is_permission_denied(server, version, method, path, body):
    r = call(server, method, path.format(v=version), body)
    assert_json_error(r, 403, "PERMISSION_DENIED", MISSING_KEY)


@pytest.mark.parametrize("version", ["v1beta", "v1"])
@pytest.mark.parametrize("method, path, body", ROUTES, ids=ROUTE_IDS)
def test_wrong_key_is_api_key_invalid(server, version, method, path, body):
    r = call(server, method, path.format(v=version), body, headers={"x-goog-api-key": "AIza" + "x" * 35})
    assert_key_invalid(r)


@pytest.mark.parametrize("how", ["query", "bearer"])
def test_wrong_key_any_transport(server, how):
    wrong = "AIzaSyThisIsNotAValidKeyForThisServer12"
    if how == "query":
        r = call(server, "GET", "/v1beta/models", params={"key": wrong})
    else:
        r = call(server, "GET", "/v1beta/models", headers={"Authorization": f"Bearer {wrong}"})
    assert_key_invalid(r)


@pytest.mark.parametrize("how", ["x-goog-api-key", "query", "bearer"])
@pytest.mark.parametrize("method, path, body", ROUTES[:5], ids=ROUTE_IDS[:5])
def test_key_accepted_from_each_transport(server, how, method, path, body):
    headers, params = {}, None
    if how == "x-goog-api-key":
        headers["x-goog-api-key"] = server.api_key
    elif how == "query":
        params = {"key": server.api_key}
    else:
        headers["Authorization"] = f"Bearer {server.api_key}"
    r = call(server, method, path.format(v="v1beta"), body, headers=headers, params=params)
    assert r.status_code == 200, r.text


def test_healthz_needs_no_key(server):
    r = httpx.get(server.base_url + "/healthz", timeout=TIMEOUT)
    assert r.status_code == 200, r.text


def test_sdk_with_wrong_key_is_client_error_400(server):
    from google import genai
    from google.genai import errors, types

    client = genai.Client(api_key="AIza" + "y" * 35, http_options=types.HttpOptions(base_url=server.base_url))
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert info.value.code == 400
    assert info.value.status == "INVALID_ARGUMENT"
    assert info.value.message == INVALID_KEY


# The first key -------------------------------------------------------------------------------------------------------
def test_first_start_prints_key_and_exports(server):
    log = server.log()
    assert KEY_RE.match(server.api_key), log
    lines = [line.strip() for line in log.splitlines()]
    assert f"export GOOGLE_GEMINI_BASE_URL={server.base_url}" in lines, log
    assert f"export GEMINI_API_KEY={server.api_key}" in lines, log
    assert works(server, server.api_key)


def test_database_never_holds_a_key_in_clear(server):
    key, _ = create_key(server, "--name", "cleartext-check")
    if not ON_POSTGRES:
        db = server.data_dir / "pollux.db"
        assert db.exists()
        assert db.read_bytes()[:16] == b"SQLite format 3\x00"
    raw = db_bytes(server)
    for k in (server.api_key, key):
        assert k.encode() not in raw
        assert k[4:].encode() not in raw  # not even without its prefix
    assert not ANY_KEY_RE.search(raw.decode("latin-1"))


# `pollux keys` -------------------------------------------------------------------------------------------------------
def test_keys_create_while_serving_works_at_once(server):
    result = server.cli("keys", "create", "--name", "ci")
    key = result.stdout.rstrip("\n").splitlines()[-1]
    assert KEY_RE.match(key), result.stdout  # the key alone on the last line
    assert key != server.api_key
    assert works(server, key)
    r = call(server, "POST", "/v1beta/models/gemini-2.5-flash:generateContent", HELLO, headers={"x-goog-api-key": key})
    assert r.status_code == 200, r.text


def test_keys_list_never_shows_a_key(server):
    key, _ = create_key(server, "--name", "listed-key")
    out = server.cli("keys", "list").stdout
    assert "Default key" in out, out
    key_id, row = key_row(out, "listed-key")
    assert re.fullmatch(r"[\w-]+", key_id), row
    assert re.search(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}", row), row  # creation time
    assert "Default Gemini Project" in row, row
    assert key not in out and server.api_key not in out, out
    assert key[4:] not in out and server.api_key[4:] not in out, out
    assert not ANY_KEY_RE.search(out), out


def test_keys_revoke_takes_effect_everywhere(server):
    """Revoked by another process (the CLI): refused within the key cache's half second, on every route."""
    name = f"to-revoke-{secrets.token_hex(3)}"
    key, _ = create_key(server, "--name", name)
    key_id, _ = key_row(server.cli("keys", "list").stdout, name)
    assert works(server, key)
    result = run_cli(server, "keys", "revoke", key_id)
    assert result.returncode == 0, result.stderr
    assert refused(server, key)
    for method, path, body in ROUTES[:3]:
        assert_key_invalid(call(server, method, path.format(v="v1beta"), body, headers={"x-goog-api-key": key}))
    assert_key_invalid(call(server, "GET", "/v1beta/models", params={"key": key}))
    # The server keeps running and the other keys keep working.
    assert server.process.poll() is None
    assert works(server, server.api_key)
    # Revoking an id that never existed fails.
    unknown = run_cli(server, "keys", "revoke", "no-such-key-id")
    assert unknown.returncode != 0
    assert (unknown.stderr + unknown.stdout).strip(), "a failed revoke should say why"


# `pollux projects` ---------------------------------------------------------------------------------------------------
def test_projects_create_list_rename_and_keys(server):
    tag = secrets.token_hex(3)
    team_b, team_c = f"Team B {tag}", f"Team C {tag}"

    created = run_cli(server, "projects", "create", team_b)
    assert created.returncode == 0, created.stderr

    renamed = run_cli(server, "projects", "rename", team_b, team_c)
    assert renamed.returncode == 0, renamed.stderr
    listed = server.cli("projects", "list").stdout
    assert team_c in listed and team_b not in listed and "Default Gemini Project" in listed, listed

    key, _ = create_key(server, "--project", team_c, "--name", "team-c-key")
    assert works(server, key)
    r = call(server, "POST", "/v1beta/models/gemini-2.5-flash:generateContent", HELLO, headers={"x-goog-api-key": key})
    assert r.status_code == 200, r.text

    duplicate = run_cli(server, "projects", "create", team_c)
    assert duplicate.returncode != 0, duplicate.stdout
    assert team_c in duplicate.stderr + duplicate.stdout, (duplicate.stdout, duplicate.stderr)
    # A key for a project that does not exist is refused.
    nowhere = run_cli(server, "keys", "create", "--project", f"Team Z {tag}")
    assert nowhere.returncode != 0, nowhere.stdout
    assert not ANY_KEY_RE.search(nowhere.stdout), nowhere.stdout


def test_deleting_the_default_project(tmp_path):
    """The default project is deleted like any other; with no project left, the next start begins afresh."""
    data = tmp_path / "data"
    with start_server(data) as srv:
        first_key = srv.api_key
        srv.cli("projects", "create", "Other")
        gone = run_cli(srv, "projects", "delete", "Default Gemini Project")
        assert gone.returncode == 0 and "now needs --project" in gone.stdout, (gone.stdout, gone.stderr)
        assert refused(srv, first_key)  # within the key cache's half second
        assert_key_invalid(call(srv, "GET", "/v1beta/models", headers={"x-goog-api-key": first_key}))
        no_default = run_cli(srv, "keys", "create")
        assert no_default.returncode != 0 and "Default Gemini Project" in no_default.stderr, no_default.stderr
        last = run_cli(srv, "projects", "delete", "Other")
        assert last.returncode == 0 and "No project is left" in last.stdout, (last.stdout, last.stderr)
    with start_server(data) as srv:
        assert srv.api_key.startswith("AIza") and srv.api_key != first_key, srv.log()
        assert_key_invalid(call(srv, "GET", "/v1beta/models", headers={"x-goog-api-key": first_key}))


# Restart ---------------------------------------------------------------------------------------------------------------
def test_restart_keeps_keys_and_prints_no_new_key(tmp_path):
    data_dir = tmp_path / "data"
    with start_server(data_dir) as first:
        assert KEY_RE.match(first.api_key), first.log()
        cli_key, _ = create_key(first, "--name", "survivor")
        assert works(first, cli_key) and works(first, first.api_key)

    with start_server(data_dir) as second:
        log = second.log()
        assert second.api_key == "", log
        assert "export GEMINI_API_KEY" not in log, log
        assert not ANY_KEY_RE.search(log), log
        assert works(second, first.api_key)
        assert works(second, cli_key)
        assert_key_invalid(call(second, "GET", "/v1beta/models", headers={"x-goog-api-key": "AIza" + "z" * 35}))
