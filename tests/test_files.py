"""The Files API through google-genai, curl (the docs' upload script) and raw HTTP: uploads, resources, durability,
isolation between projects, and files as model input."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
from datetime import datetime, timedelta, timezone

import httpx
import media
import pytest
from conftest import Server, eventually, in_store, sql, start_server
from google import genai
from google.genai import errors, types

# Sample media built by tests/media.py: a one-page PDF, a 272x92 PNG, 2.0625 s of WAV, a 2.75 s 1280x720 MP4.
PDF = media.sample("story.pdf")
PNG = media.sample("google.png")
WAV = media.sample("voice_sample.wav")
MP4 = media.sample("animal.mp4")
TIMEOUT = 60


def client_for(server: Server, key: str | None = None) -> genai.Client:
    return genai.Client(api_key=key or server.api_key, http_options=types.HttpOptions(base_url=server.base_url))


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).hexdigest().encode()).decode()


# Uploads through the SDK ----------------------------------------------------------------------------------------------
def test_upload_from_a_path_then_get_list_delete(server):
    client = client_for(server)
    uploaded = client.files.upload(file=PDF, config=types.UploadFileConfig(display_name="Story"))
    assert uploaded.name.startswith("files/") and uploaded.display_name == "Story"
    assert uploaded.mime_type == "application/pdf" and uploaded.size_bytes == PDF.stat().st_size
    assert uploaded.sha256_hash == sha256_b64(PDF.read_bytes())
    assert uploaded.state == types.FileState.ACTIVE and uploaded.source == types.FileSource.UPLOADED
    assert uploaded.uri.startswith("https://") and uploaded.uri.endswith("/" + uploaded.name)
    assert (uploaded.expiration_time - uploaded.create_time).total_seconds() == pytest.approx(48 * 3600, abs=5)
    got = client.files.get(name=uploaded.name)
    assert got.name == uploaded.name and got.sha256_hash == uploaded.sha256_hash
    assert uploaded.name in [f.name for f in client.files.list()]
    client.files.delete(name=uploaded.name)
    with pytest.raises(errors.ClientError) as err:
        client.files.get(name=uploaded.name)
    assert err.value.code == 403 and "may not exist" in err.value.message


def test_upload_from_bytesio_with_mime_and_a_chosen_name(server):
    client = client_for(server)
    name = "notes" + os.urandom(3).hex()
    uploaded = client.files.upload(file=io.BytesIO(b"hello pollux"),
                                   config=types.UploadFileConfig(mime_type="text/plain", name=f"files/{name}"))
    assert uploaded.name == f"files/{name}" and uploaded.size_bytes == 12 and uploaded.state == types.FileState.ACTIVE
    with pytest.raises(errors.APIError) as err:
        client.files.upload(file=io.BytesIO(b"x"), config=types.UploadFileConfig(mime_type="text/plain",
                                                                                 name=f"files/{name}"))
    assert err.value.code == 409


def test_upload_in_several_chunks_keeps_every_byte(server, tmp_path):
    data = os.urandom(8 * 1024 * 1024 * 2 + 12345)  # three chunks of the SDK's 8 MiB
    path = tmp_path / "big.wav"
    shutil.copy(WAV, path)
    with path.open("ab") as f:  # a valid WAV with a long tail is still a WAV to probe; the bytes are what matter
        f.write(data)
    client = client_for(server)
    uploaded = client.files.upload(file=path)
    assert uploaded.size_bytes == path.stat().st_size
    assert uploaded.sha256_hash == sha256_b64(path.read_bytes())


def test_unsupported_mime_type(server):
    client = client_for(server)
    with pytest.raises(errors.APIError) as err:
        client.files.upload(file=io.BytesIO(b"abc"), config=types.UploadFileConfig(mime_type="bad/mime_type"))
    assert "Unsupported MIME" in err.value.message and err.value.code == 400


def test_broken_pdf_fails_with_a_reason(server):
    client = client_for(server)
    uploaded = client.files.upload(file=io.BytesIO(b"%PDF-1.7 truncated"),
                                   config=types.UploadFileConfig(mime_type="application/pdf"))
    assert uploaded.state == types.FileState.FAILED and uploaded.error.message
    with pytest.raises(errors.ClientError) as err:
        client.models.generate_content(model="gemini-2.5-flash", contents=[uploaded, "Summarize"])
    assert err.value.code == 400 and "not in an ACTIVE state" in err.value.message


def test_list_pages_without_an_empty_last_page(server):
    client = client_for(server)
    names = {client.files.upload(file=io.BytesIO(f"file {i}".encode()),
                                 config=types.UploadFileConfig(mime_type="text/plain")).name for i in range(5)}
    url = f"{server.base_url}/v1beta/files"
    seen, token, pages = [], None, 0
    while True:
        body = httpx.get(url, params={"pageSize": 2, **({"pageToken": token} if token else {})},
                         headers={"x-goog-api-key": server.api_key}, timeout=TIMEOUT).json()
        pages += 1
        assert body.get("files"), body
        seen += [f["name"] for f in body["files"]]
        token = body.get("nextPageToken")
        if not token:
            break
    assert names <= set(seen) and len(seen) == len(set(seen))
    negative = httpx.get(url, params={"pageSize": -1}, headers={"x-goog-api-key": server.api_key}, timeout=TIMEOUT)
    assert negative.status_code == 400 and "must not be negative" in negative.json()["error"]["message"]


# The docs' curl script, verbatim but for the base URL and key -----------------------------------------------------
def test_docs_rest_upload_script(server, tmp_path):
    shutil.copy(PDF, tmp_path / "A17_FlightPlan.pdf")
    script = f'''
set -e
BASE_URL="{server.base_url}"
GOOGLE_API_KEY="{server.api_key}"
DISPLAY_NAME="A17_FlightPlan"
MIME_TYPE=application/pdf
NUM_BYTES=$(wc -c < "${{DISPLAY_NAME}}.pdf")
tmp_header_file=upload-header.tmp
curl "${{BASE_URL}}/upload/v1beta/files?key=${{GOOGLE_API_KEY}}" \\
  -D upload-header.tmp \\
  -H "X-Goog-Upload-Protocol: resumable" \\
  -H "X-Goog-Upload-Command: start" \\
  -H "X-Goog-Upload-Header-Content-Length: ${{NUM_BYTES}}" \\
  -H "X-Goog-Upload-Header-Content-Type: ${{MIME_TYPE}}" \\
  -H "Content-Type: application/json" \\
  -d "{{'file': {{'display_name': '${{DISPLAY_NAME}}'}}}}" 2> /dev/null
upload_url=$(grep -i "x-goog-upload-url: " "${{tmp_header_file}}" | cut -d" " -f2 | tr -d "\\r")
rm "${{tmp_header_file}}"
curl "${{upload_url}}" \\
  -H "Content-Length: ${{NUM_BYTES}}" \\
  -H "X-Goog-Upload-Offset: 0" \\
  -H "X-Goog-Upload-Command: upload, finalize" \\
  --data-binary "@${{DISPLAY_NAME}}.pdf" 2> /dev/null > file_info.json
file_uri=$(python3 -c 'import json; print(json.dumps(json.load(open("file_info.json"))["file"]["uri"]))')
curl "${{BASE_URL}}/v1beta/models/gemini-2.5-flash:generateContent?key=$GOOGLE_API_KEY" \\
    -H 'Content-Type: application/json' \\
    -X POST \\
    -d '{{
      "contents": [{{
        "parts":[
          {{"text": "Summarize this document"}},
          {{"file_data":{{"mime_type": "application/pdf", "file_uri": '$file_uri'}}}}]
        }}]
      }}' 2> /dev/null > response.json
'''
    subprocess.run(["bash", "-c", script], cwd=tmp_path, check=True, timeout=TIMEOUT)
    info = json.loads((tmp_path / "file_info.json").read_text())["file"]
    assert info["displayName"] == "A17_FlightPlan" and info["state"] == "ACTIVE"
    response = json.loads((tmp_path / "response.json").read_text())
    text = response["candidates"][0]["content"]["parts"][-1]["text"]
    assert "application/pdf" in text and "1 page" in text, text
    details = {d["modality"]: d["tokenCount"] for d in response["usageMetadata"]["promptTokensDetails"]}
    assert details["DOCUMENT"] == 258


# Raw protocol: query, resume, multipart, media ---------------------------------------------------------------------
def _start(server: Server, size: int, mime: str = "application/pdf", key: str | None = None) -> str:
    r = httpx.post(f"{server.base_url}/upload/v1beta/files", headers={
        "x-goog-api-key": key or server.api_key, "X-Goog-Upload-Protocol": "resumable",
        "X-Goog-Upload-Command": "start", "X-Goog-Upload-Header-Content-Length": str(size),
        "X-Goog-Upload-Header-Content-Type": mime}, json={"file": {"displayName": "raw"}}, timeout=TIMEOUT)
    assert r.status_code == 200 and r.headers["x-goog-upload-status"] == "active", r.text
    return r.headers["x-goog-upload-url"]


def _send(url: str, data: bytes, offset: int, command: str) -> httpx.Response:
    return httpx.post(url, content=data, headers={"X-Goog-Upload-Offset": str(offset),
                                                  "X-Goog-Upload-Command": command}, timeout=TIMEOUT)


def _query(url: str) -> int:
    r = httpx.post(url, headers={"X-Goog-Upload-Command": "query"}, timeout=TIMEOUT)
    assert r.headers["x-goog-upload-status"] == "active"
    return int(r.headers["x-goog-upload-size-received"])


def test_a_server_killed_mid_upload_resumes_from_the_committed_offset(tmp_path):
    data = PDF.read_bytes()
    half = len(data) // 2
    with start_server(tmp_path / "data") as srv:
        url = _start(srv, len(data))
        r = _send(url, data[:half], 0, "upload")
        assert r.status_code == 200 and r.headers["x-goog-upload-status"] == "active"
        assert r.headers["x-goog-upload-size-received"] == str(half)
        srv.process.send_signal(signal.SIGKILL)  # no shutdown: only what was acknowledged may survive
        srv.process.wait()
        with start_server(tmp_path / "data") as srv2:
            url2 = url.replace(srv.base_url, srv2.base_url)
            assert _query(url2) == half
            wrong = _send(url2, data[half:], 0, "upload, finalize")
            assert wrong.status_code == 400 and "offset" in wrong.json()["error"]["message"].lower()
            done = _send(url2, data[half:], half, "upload, finalize")
            assert done.headers["x-goog-upload-status"] == "final", done.text
            file = done.json()["file"]
            assert file["sha256Hash"] == sha256_b64(data) and file["sizeBytes"] == str(len(data))
            assert file["state"] == "ACTIVE"
            srv2.stop()
            with start_server(tmp_path / "data") as srv3:  # a finished upload survives a restart
                client = client_for(srv3, srv.api_key)
                got = client.files.get(name=file["name"])
                assert got.sha256_hash == file["sha256Hash"]


def test_a_stalled_body_is_dropped_and_frees_its_upload(tmp_path):
    """A client that stops sending mid-body holds nothing for ever: not its connection, not the upload's lock."""
    with start_server(tmp_path / "data", config="[limits]\nbody_idle_seconds = 1\n") as srv:
        url = _start(srv, 10, "text/plain")
        host, port = srv.base_url.removeprefix("http://").split(":")
        path = url.removeprefix(srv.base_url)
        for head in (f"POST {path} HTTP/1.1\r\nX-Goog-Upload-Command: upload, finalize\r\nX-Goog-Upload-Offset: 0"
                     "\r\nContent-Length: 10\r\n", f"POST /v1beta/models/gemini-2.5-flash:generateContent HTTP/1.1"
                     f"\r\nx-goog-api-key: {srv.api_key}\r\nContent-Length: 97\r\n"):
            with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
                sock.sendall(f"{head}Host: {host}\r\n\r\n01234".encode())
                assert sock.recv(100).startswith(b"HTTP/1.1 499"), head  # answered once the body stalled
        assert srv.log().count("no byte of the body for 1 s; dropping the request") == 2, srv.log()
        done = _send(url, b"0123456789", 0, "upload, finalize")  # the stalled chunk left nothing behind
        assert done.status_code == 200 and done.json()["file"]["sizeBytes"] == "10", done.text
        assert "Traceback" not in srv.log()


def test_upload_url_is_a_capability_bound_to_its_project(server):
    url = _start(server, 10, "text/plain")
    forged = url.split("upload_id=")[0] + "upload_id=" + "A" * 43 + "&upload_protocol=resumable"
    assert _send(forged, b"0123456789", 0, "upload, finalize").status_code == 404
    server.cli("projects", "create", "capability-test")
    other = server.new_key(project="capability-test")
    r = httpx.post(url, content=b"0123456789", headers={"X-Goog-Upload-Offset": "0", "x-goog-api-key": other,
                                                      "X-Goog-Upload-Command": "upload, finalize"}, timeout=TIMEOUT)
    assert r.status_code == 404
    assert _send(url, b"0123456789", 0, "upload, finalize").headers["x-goog-upload-status"] == "final"


def test_multipart_streamed_in_tiny_pieces_and_malformed_bodies(server):
    meta = json.dumps({"file": {"display_name": "tiny"}}).encode()
    good = (b"--B\r\nContent-Type: application/json\r\n\r\n" + meta + b"\r\n--B\r\nContent-Type: text/plain\r\n\r\n"
            b"hello world\r\n--B--\r\n")

    def post(body: bytes, piece: int = 3) -> httpx.Response:
        chunks = (body[i:i + piece] for i in range(0, len(body), piece))
        return httpx.post(f"{server.base_url}/upload/v1beta/files?uploadType=multipart", content=chunks,
                          timeout=TIMEOUT, headers={"x-goog-api-key": server.api_key,
                                                    "Content-Type": "multipart/related; boundary=B"})

    r = post(good)
    assert r.status_code == 200 and r.json()["file"]["sizeBytes"] == "11", r.text
    assert post(good[:-12]).status_code == 400  # no closing boundary: never a silently truncated file
    third = good.replace(b"--B--", b"--B\r\nContent-Type: text/plain\r\n\r\nmore\r\n--B--")
    assert post(third).status_code == 400
    assert post(good.replace(b"Content-Type: application/json", b"Content-Type application/json")).status_code == 400
    long = httpx.post(f"{server.base_url}/upload/v1beta/files?uploadType=multipart", content=good, timeout=TIMEOUT,
                      headers={"x-goog-api-key": server.api_key,
                               "Content-Type": "multipart/related; boundary=" + "b" * 5000})
    assert long.status_code == 400 and "boundary" in long.json()["error"]["message"], long.text


def test_odd_numbers_are_400s(server):
    url = _start(server, 10, "text/plain")
    for offset in ("\u00b9", "-1", "1e3"):
        r = httpx.post(url, content=b"x", timeout=TIMEOUT, headers={
            "X-Goog-Upload-Offset": offset.encode("latin-1"), "X-Goog-Upload-Command": "upload"})
        assert r.status_code == 400 and r.headers["x-goog-upload-status"] == "active", (offset, r.text)
    client = client_for(server)
    uploaded = client.files.upload(file=MP4)
    r = httpx.post(f"{server.base_url}/v1beta/models/gemini-2.5-flash:countTokens", timeout=TIMEOUT,
                   headers={"x-goog-api-key": server.api_key}, json={"contents": [{"parts": [
                       {"fileData": {"fileUri": uploaded.uri}, "videoMetadata": {"startOffset": "nans"}}]}]})
    assert r.status_code == 400, r.text


def test_upload_larger_than_declared_is_refused(server):
    url = _start(server, 4, "text/plain")
    r = _send(url, b"0123456789", 0, "upload, finalize")
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert _query(url) == 0


def test_multipart_and_media_uploads(server):
    meta = json.dumps({"file": {"display_name": "multi"}}).encode()
    body = (b"--XYZ\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n" + meta +
            b"\r\n--XYZ\r\nContent-Type: image/png\r\n\r\n" + PNG.read_bytes() + b"\r\n--XYZ--\r\n")
    r = httpx.post(f"{server.base_url}/upload/v1beta/files?uploadType=multipart", content=body, timeout=TIMEOUT,
                   headers={"x-goog-api-key": server.api_key, "Content-Type": "multipart/related; boundary=XYZ"})
    assert r.status_code == 200, r.text
    file = r.json()["file"]
    assert file["displayName"] == "multi" and file["mimeType"] == "image/png"
    assert file["sha256Hash"] == sha256_b64(PNG.read_bytes()) and file["state"] == "ACTIVE"
    r = httpx.post(f"{server.base_url}/upload/v1beta/files?uploadType=media", content=WAV.read_bytes(),
                   timeout=TIMEOUT, headers={"x-goog-api-key": server.api_key, "Content-Type": "audio/wav"})
    assert r.status_code == 200 and r.json()["file"]["sizeBytes"] == str(WAV.stat().st_size), r.text


# Isolation -----------------------------------------------------------------------------------------------------------
def test_another_project_cannot_see_or_use_a_file(server):
    owner = client_for(server)
    mine = owner.files.upload(file=PDF)
    server.cli("projects", "create", "stranger")
    theirs = client_for(server, server.new_key(project="stranger"))
    for call in (lambda: theirs.files.get(name=mine.name), lambda: theirs.files.delete(name=mine.name)):
        with pytest.raises(errors.ClientError) as err:
            call()
        assert err.value.code == 403
        assert err.value.message == (f"You do not have permission to access the File {mine.name.split('/')[1]} "
                                     "or it may not exist.")
    assert mine.name not in [f.name for f in theirs.files.list()]
    with pytest.raises(errors.ClientError) as err:
        theirs.models.generate_content(model="gemini-2.5-flash", contents=[mine, "Summarize"])
    assert err.value.code == 403
    assert owner.files.get(name=mine.name).state == types.FileState.ACTIVE


def test_user_uploads_cannot_be_downloaded(server):
    client = client_for(server)
    uploaded = client.files.upload(file=PNG)
    r = httpx.get(f"{server.base_url}/v1beta/{uploaded.name}:download", params={"alt": "media"},
                  headers={"x-goog-api-key": server.api_key}, timeout=TIMEOUT)
    assert r.status_code == 400 and "generated" in r.json()["error"]["message"]


def test_generated_files_download_at_both_paths(server):
    """Batch outputs are generated files; one is planted here as the batch service will write it."""
    from pollux.auth import hash_key
    from pollux.config import Limits
    from pollux.files.service import FileService

    file_id = "batch-" + os.urandom(4).hex()
    data = b'{"key": "1", "response": {}}\n'

    async def plant(store, blobs):
        live = await store.keys.live(hash_key(server.api_key))
        assert live is not None
        files = FileService(store, blobs, Limits())
        row = files.new_row(live.project_id, file_id, "out", "application/jsonl", len(data),
                            hashlib.sha256(data).hexdigest(), source="GENERATED")
        await blobs.write(f"files/{live.project_id}/{file_id}", data)
        await store.files.insert({**row, "state": "ACTIVE"})

    in_store(server, plant)
    client = client_for(server)
    got = client.files.get(name=f"files/{file_id}")
    assert got.download_uri and got.source == types.FileSource.GENERATED
    assert client.files.download(file=f"files/{file_id}") == data
    r = httpx.get(f"{server.base_url}/download/v1beta/files/{file_id}:download", params={"alt": "media"},
                  headers={"x-goog-api-key": server.api_key}, timeout=TIMEOUT)
    assert r.status_code == 200 and r.content == data


# Files and media as model input ---------------------------------------------------------------------------------------
def test_pdf_inline_by_uri_and_two_at_once(server):
    client = client_for(server)
    pdf = PDF.read_bytes()
    inline = client.models.generate_content(model="gemini-2.5-flash", contents=[
        types.Part.from_bytes(data=pdf, mime_type="application/pdf"), "Summarize this document"])
    uploaded = client.files.upload(file=PDF)
    by_uri = client.models.generate_content(model="gemini-2.5-flash", contents=[uploaded, "Summarize this document"])
    assert inline.usage_metadata.prompt_token_count == by_uri.usage_metadata.prompt_token_count
    second = client.files.upload(file=PDF)
    both = client.models.generate_content(model="gemini-2.5-flash",
                                          contents=[uploaded, second, "Compare these documents"])
    details = {d.modality: d.token_count for d in both.usage_metadata.prompt_tokens_details}
    assert details[types.MediaModality.DOCUMENT] == 2 * 258
    assert "2 attachments" in both.text
    assert client.models.count_tokens(model="gemini-2.5-flash", contents=[uploaded, second, "Compare these documents"]
                                      ).total_tokens == both.usage_metadata.prompt_token_count


def test_audio_and_video_are_measured(server):
    client = client_for(server)
    audio = client.files.upload(file=WAV)
    video = client.files.upload(file=MP4)
    assert video.video_metadata and float(video.video_metadata["videoDuration"].rstrip("s")) > 0
    response = client.models.generate_content(model="gemini-2.5-flash", contents=[audio, video, "Describe"])
    details = {d.modality: d.token_count for d in response.usage_metadata.prompt_tokens_details}
    seconds = float(video.video_metadata["videoDuration"].rstrip("s"))
    assert details[types.MediaModality.VIDEO] >= 258 * int(seconds)
    assert details[types.MediaModality.AUDIO] > 0
    assert f"wav, {WAV.stat().st_size} bytes, 2.1 s" in response.text and "video/mp4" in response.text  # 2.0625 s
    clip = types.Part(file_data=types.FileData(file_uri=video.uri, mime_type=video.mime_type),
                      video_metadata=types.VideoMetadata(start_offset="1s", end_offset="2s", fps=2))
    clipped = client.models.generate_content(model="gemini-2.5-flash", contents=[clip, "Describe"])
    details = {d.modality: d.token_count for d in clipped.usage_metadata.prompt_tokens_details}
    assert details[types.MediaModality.VIDEO] == 2 * 258 + 32  # one second at 2 frames a second, with its sound


def test_a_broken_inline_image_is_a_clear_400(server):
    client = client_for(server)
    with pytest.raises(errors.ClientError) as err:
        client.models.generate_content(model="gemini-2.5-flash", contents=[
            types.Part.from_bytes(data=b"not a png", mime_type="image/png"), "What is this?"])
    assert err.value.code == 400 and "image" in err.value.message.lower()


def _expire_everything(srv) -> None:
    """Move every file's and upload's expiry into the past, as another process sharing the database could."""
    past = (datetime.now(timezone.utc) - timedelta(seconds=1)).strftime("%Y-%m-%d %H:%M:%S.%f")
    for table in ("files", "uploads"):
        sql(srv, f"UPDATE {table} SET expire_time = ?", past)


# Limits and expiry -----------------------------------------------------------------------------------------------------
def test_quotas_expiry_and_cleanup(tmp_path):
    # Limits sized to the sample files: the PDF fits under both, a second PDF would pass the project's limit, and the
    # video is over the per-file limit.
    pdf_bytes = PDF.stat().st_size
    max_file, max_project = 2 * pdf_bytes, pdf_bytes + pdf_bytes // 2
    assert MP4.stat().st_size > max_file
    config = f"[limits]\nmax_file_bytes = {max_file}\nmax_project_bytes = {max_project}\n"
    data = tmp_path / "data"
    with start_server(data, config=config) as srv:
        client = client_for(srv)
        with pytest.raises(errors.APIError) as err:
            client.files.upload(file=MP4)  # over the per-file limit
        assert err.value.code == 400 and "exceeds the limit" in err.value.message
        kept = client.files.upload(file=PDF)
        with pytest.raises(errors.APIError) as err:
            client.files.upload(file=PDF)  # a second would pass the project's limit
        assert err.value.code == 429 and err.value.status == "RESOURCE_EXHAUSTED"
        # Without a declared size the quota holds while the bytes arrive, and a failed one-shot upload holds nothing:
        # a PDF's worth of bytes is under the file limit, but with the kept PDF over the project's.
        for _ in range(2):
            r = httpx.post(f"{srv.base_url}/upload/v1beta/files?uploadType=media", content=MP4.read_bytes()[:pdf_bytes],
                           headers={"x-goog-api-key": srv.api_key, "Content-Type": "video/mp4"}, timeout=TIMEOUT)
            assert r.status_code == 400 and "storage" in r.json()["error"]["message"], r.text
        assert not list((data / "uploads").glob("*/*"))
        abandoned = _start(srv, 10, "text/plain")
        assert _send(abandoned, b"01234", 0, "upload").status_code == 200
        stored = list((data / "files").glob("*/*"))
        assert len(stored) == 1 and len(list((data / "uploads").glob("*/*"))) == 1
        _expire_everything(srv)  # the clock moved on, without a test that waits for it
        with pytest.raises(errors.ClientError) as err:  # expired: gone at once, before any sweep
            client.files.get(name=kept.name)
        assert err.value.code == 403
        assert _send(abandoned, b"56789", 5, "upload, finalize").status_code == 404
    # Housekeeping (a leased job, once across processes) deletes the bytes too: when a server starts, then at its
    # interval (the first server may have got there first).
    with start_server(data, config=config):
        assert eventually(lambda: not list((data / "files").glob("*/*")) and not list((data / "uploads").glob("*/*")))


def test_a_decoder_crash_fails_the_file_not_the_server(tmp_path, monkeypatch):
    """A decoder that raises something unexpected marks the file FAILED, at upload and when another process takes
    over the processing job of one that died."""
    import asyncio

    from pollux import auth
    from pollux.config import Limits
    from pollux.files import service as files_service
    from pollux.jobs import JobRunner
    from pollux.store import Store, job_row
    from pollux.store.blobs import open_blobs

    def crash(path, mime):
        raise RuntimeError("decoder bug")

    monkeypatch.setattr(files_service, "inspect", crash)

    async def run() -> None:
        store = await Store.open(None, tmp_path)
        blobs = open_blobs(str(tmp_path), tmp_path)
        try:
            project = (await auth.create_project(store, "p")).id
            runner = JobRunner(store, lease=30)
            files = files_service.FileService(store, blobs, Limits(), runner)
            for file_id in ("a", "b"):
                await blobs.write(f"files/{project}/{file_id}", b"RIFF")
                await store.files.insert(files.new_row(project, file_id, "", "audio/wav", 4, "0" * 64))
            record = await store.files.get(project, "a")
            assert (await files.process(record)).state == "FAILED"
            # "b" was left PROCESSING by a process that died holding its job: the lease ran out, another takes it.
            await store.jobs.add(job_row(files_service.PROCESS_JOB, {"project_id": project, "file_id": "b"},
                                         owner="a-dead-process", lease=-1))
            job = await store.jobs.claim(runner.owner, 30, [files_service.PROCESS_JOB])
            assert job is not None and job.attempts == 2
            await runner.run(job)
            assert (await store.files.get(project, "b")).state == "FAILED"
            assert (await store.jobs.get(job.id))["state"] == "done"
        finally:
            await blobs.close()
            await store.close()

    asyncio.run(run())
