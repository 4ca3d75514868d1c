"""A data dir from before the shared state (schema 0003: one part file per upload, crash recovery at start-up) is
upgraded in place: an upload in progress resumes from its committed offset, and a file left PROCESSING by a crash is
processed by a job."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import httpx
from conftest import database_url, eventually, on_server, sql, start_server

TIMEOUT = 60


def _downgrade_to_0003(url: str) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    from pollux.store.db import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0003")
    finally:
        engine.dispose()


def test_a_0003_data_dir_is_upgraded_in_place(tmp_path):
    data = tmp_path / "data"
    with start_server(data) as srv:
        key = srv.api_key
        r = httpx.post(f"{srv.base_url}/upload/v1beta/files", json={"file": {}}, timeout=TIMEOUT, headers={
            "x-goog-api-key": key, "X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start",
            "X-Goog-Upload-Header-Content-Length": "10", "X-Goog-Upload-Header-Content-Type": "text/plain"})
        url = r.headers["x-goog-upload-url"]
        (project,) = sql(srv, "SELECT project_id FROM api_keys")[0]
    _downgrade_to_0003(database_url(data) or f"sqlite:///{data / 'pollux.db'}")
    # As 0003 kept them: the upload's first 5 bytes in its one part file, and a file whose processing a crash cut.
    upload_id = hashlib.sha256(httpx.URL(url).params["upload_id"].encode()).hexdigest()
    (data / "uploads").mkdir(exist_ok=True)
    (data / "uploads" / f"{upload_id}.part").write_bytes(b"01234")
    (data / "files" / project).mkdir(parents=True, exist_ok=True)
    (data / "files" / project / "cut-short").write_bytes(b"processing was cut short")
    now = datetime.now(timezone.utc)
    sql(srv, "UPDATE uploads SET committed = 5 WHERE id = ?", upload_id)
    sql(srv, "INSERT INTO files (project_id, id, display_name, mime_type, size_bytes, sha256, state, source, "
        "create_time, update_time, expire_time) VALUES (?, 'cut-short', '', 'text/plain', 24, ?, 'PROCESSING', "
        "'UPLOADED', ?, ?, ?)", project, hashlib.sha256(b"processing was cut short").hexdigest(),
        now.strftime("%Y-%m-%d %H:%M:%S.%f"), now.strftime("%Y-%m-%d %H:%M:%S.%f"),
        (now + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S.%f"))
    with start_server(data) as srv:
        r = httpx.post(on_server(srv, url), headers={"X-Goog-Upload-Command": "query"}, timeout=TIMEOUT)
        assert r.headers["x-goog-upload-size-received"] == "5", r.text
        r = httpx.post(on_server(srv, url), content=b"56789", timeout=TIMEOUT, headers={
            "X-Goog-Upload-Offset": "5", "X-Goog-Upload-Command": "upload, finalize"})
        assert r.status_code == 200, r.text
        made = r.json()["file"]
        assert made["sizeBytes"] == "10" and made["state"] == "ACTIVE"
        got = httpx.get(f"{srv.base_url}/v1beta/files/cut-short", headers={"x-goog-api-key": key}, timeout=TIMEOUT)
        assert eventually(lambda: httpx.get(f"{srv.base_url}/v1beta/files/cut-short", timeout=TIMEOUT, headers={
            "x-goog-api-key": key}).json()["state"] == "ACTIVE"), got.text
        assert not (data / "uploads" / f"{upload_id}.part").exists()  # joined into the file, then dropped

