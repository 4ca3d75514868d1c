"""Files routes: POST /upload/{v}/files (resumable, multipart, media), GET/DELETE /{v}/files[/{id}], downloads."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..errors import ApiError
from ..store.records import FileRecord
from ..wire import JSONResponse, error_response, page_params, parse, read_body
from .protocol import CreateFileRequest, FileMetadata, file_json
from .service import FileService
from .uploads import CHUNK_GRANULARITY, Progress, UploadService, upload_gone

METADATA_LIMIT = 64 * 1024  # the JSON that starts an upload
_DIGITS = re.compile(r"[0-9]{1,19}")


def base_url(request: Request) -> str:
    """This server as the client reached it (the upload URL must be absolute, on this server's own host)."""
    return str(request.base_url).rstrip("/")


def _commands(request: Request) -> set[str]:
    return {c.strip().lower() for c in request.headers.get("x-goog-upload-command", "").split(",") if c.strip()}


def _protocol(request: Request) -> str:
    protocol = request.headers.get("x-goog-upload-protocol") or request.query_params.get("uploadType") or ""
    return {"media": "raw"}.get(protocol.lower(), protocol.lower())


def _progress_response(progress: Progress, request: Request) -> Response:
    headers = {"X-Goog-Upload-Status": progress.status, "X-Goog-Upload-Size-Received": str(progress.committed)}
    if progress.file is None:
        return Response(b"", headers=headers)
    return JSONResponse({"file": file_json(progress.file, base_url(request))}, headers=headers)


async def _metadata(request: Request) -> FileMetadata:
    """The `{"file": {...}}` body, in either casing, and also with the single quotes of the docs' curl example."""
    body = await read_body(request, METADATA_LIMIT)
    if b"'" in body and b'"' not in body:
        body = body.replace(b"'", b'"')  # `-d "{'file': {'display_name': 'X'}}"` from the docs
    return parse(CreateFileRequest, body).file or FileMetadata()


def _key_id(request: Request) -> str | None:
    """The id of the key the request was authenticated with (`auth.authenticate` notes it), which an upload records."""
    return getattr(request.state, "key_id", None)


async def upload(request: Request, uploads: UploadService, project_id: str | None) -> Response:
    """Everything POSTed to /upload/{v}/files. With `upload_id`, a chunk, query or cancel of a resumable upload
    (authorized by the capability in the URL); without, the start of an upload (authorized by the key)."""
    token = request.query_params.get("upload_id")
    if token:
        return await _resumable_step(request, uploads, token, project_id)
    if project_id is None:
        raise ApiError("PERMISSION_DENIED", "Method doesn't allow unregistered callers (callers without established "
                       "identity). Please use API Key or other form of API consumer identity to call this API.")
    protocol = _protocol(request)
    if protocol == "resumable":
        if "start" not in _commands(request):
            raise ApiError.invalid("A resumable upload starts with X-Goog-Upload-Command: start.")
        meta = await _metadata(request)
        declared = request.headers.get("x-goog-upload-header-content-length")
        size = meta.size_bytes
        if declared is not None:
            if not _DIGITS.fullmatch(declared.strip()):
                raise ApiError.invalid("Invalid X-Goog-Upload-Header-Content-Length.")
            size = int(declared)
        mime = request.headers.get("x-goog-upload-header-content-type") or meta.mime_type
        new = await uploads.start(project_id, _key_id(request), meta.name, meta.display_name, mime, size)
        url = f"{base_url(request)}{request.url.path}?upload_id={new}&upload_protocol=resumable"
        return Response(b"", headers={"X-Goog-Upload-Status": "active", "X-Goog-Upload-URL": url,
                                      "X-Goog-Upload-Control-URL": url,
                                      "X-Goog-Upload-Chunk-Granularity": str(CHUNK_GRANULARITY)})
    if protocol == "multipart":
        stored = await _multipart(request, uploads, project_id)
    elif protocol == "raw":
        stored = await uploads.whole(project_id, _key_id(request), None, None, request.headers.get("content-type"),
                                     request.stream())
    else:
        raise ApiError.invalid("Unknown upload protocol: use X-Goog-Upload-Protocol resumable, multipart or raw "
                               "(or uploadType=resumable|multipart|media).")
    return JSONResponse({"file": file_json(stored, base_url(request))}, headers={"X-Goog-Upload-Status": "final"})


async def _resumable_step(request: Request, uploads: UploadService, token: str, project_id: str | None) -> Response:
    session = await uploads.lookup(token)
    if project_id is not None and project_id != session.project_id:
        raise upload_gone()
    commands = _commands(request)
    if "cancel" in commands:
        await uploads.cancel(token)
        return Response(b"", headers={"X-Goog-Upload-Status": "cancelled"})
    if "query" in commands:
        try:
            return _progress_response(await uploads.query(token), request)
        except ApiError as err:
            if session.state == "active":
                raise
            # A finalized upload whose file is gone: answered as a missing file, and still `final` (not resumable).
            response = error_response(err)
            response.headers["X-Goog-Upload-Status"] = "final"
            return response
    if not commands & {"upload", "finalize"}:
        raise ApiError.invalid("X-Goog-Upload-Command must be upload, finalize, query or cancel.")
    offset_header = request.headers.get("x-goog-upload-offset")
    if offset_header is not None and not _DIGITS.fullmatch(offset_header.strip()):
        raise ApiError.invalid("Invalid X-Goog-Upload-Offset.")
    offset = int(offset_header) if offset_header is not None else None
    progress = await uploads.chunk(token, offset, request.stream(), finalize="finalize" in commands)
    return _progress_response(progress, request)


async def _multipart(request: Request, uploads: UploadService, project_id: str) -> FileRecord:
    """multipart/related (Google's form) or multipart/form-data: the JSON metadata, then the media, streamed."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not content_type.startswith(b"multipart/") or not boundary:
        raise ApiError.invalid("A multipart upload needs Content-Type: multipart/related; boundary=...")
    form = _TwoParts(boundary)
    stream = request.stream()
    # Read until the media part's headers are complete, so its metadata is known before any byte is stored.
    async for piece in stream:
        form.write(piece)
        if form.media_started:
            break
    if not form.media_started:
        raise ApiError.invalid("A multipart upload has two parts: the JSON metadata, then the media.")
    meta = parse(CreateFileRequest, bytes(form.metadata)).file or FileMetadata()
    mime = meta.mime_type or form.media_type

    async def body() -> AsyncIterator[bytes]:
        yield form.take()
        async for piece in stream:
            form.write(piece)
            yield form.take()
        form.finish()
        yield form.take()

    return await uploads.whole(project_id, _key_id(request), meta.name, meta.display_name, mime, body())


class _TwoParts:
    """A streaming multipart body of exactly two parts: metadata (kept, bounded) and media (handed on as it comes)."""

    def __init__(self, boundary: bytes) -> None:
        self.parts = 0
        self.metadata = bytearray()
        self.media_type: str | None = None
        self.media_started = False
        self.ended = False
        self._pending: list[bytes] = []
        self._field = bytearray()
        self._value = bytearray()
        try:
            self._parser = MultipartParser(boundary, {
                "on_part_begin": self._begin, "on_header_field": self._header_field,
                "on_header_value": self._header_value, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished, "on_part_data": self._data, "on_end": self._end})
        except FormParserError as exc:  # e.g. a boundary over 256 bytes
            raise ApiError.invalid(f"The multipart boundary is not valid: {exc}") from None

    def write(self, data: bytes) -> None:
        try:
            self._parser.write(data)
        except FormParserError as exc:
            raise ApiError.invalid(f"The multipart body is malformed: {exc}") from None

    def finish(self) -> None:
        self.write(b"")
        try:
            self._parser.finalize()
        except FormParserError as exc:
            raise ApiError.invalid(f"The multipart body is malformed: {exc}") from None
        if not self.ended:
            raise ApiError.invalid("The multipart body ends before its closing boundary.")

    def take(self) -> bytes:
        data, self._pending = b"".join(self._pending), []
        return data

    def _begin(self) -> None:
        self.parts += 1
        if self.parts > 2:
            raise ApiError.invalid("A multipart upload has two parts: the JSON metadata, then the media.")

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]
        if len(self._field) > METADATA_LIMIT:
            raise ApiError.invalid("A multipart header is too long.")

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]
        if len(self._value) > METADATA_LIMIT:
            raise ApiError.invalid("A multipart header is too long.")

    def _header_end(self) -> None:
        if self.parts == 2 and bytes(self._field).lower() == b"content-type":
            self.media_type = self._value.decode("latin-1").strip()
        self._field, self._value = bytearray(), bytearray()

    def _headers_finished(self) -> None:
        if self.parts == 2:
            self.media_started = True

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self.parts == 1:
            self.metadata += data[start:end]
            if len(self.metadata) > METADATA_LIMIT:
                raise ApiError.invalid(f"The upload's metadata exceeds {METADATA_LIMIT} bytes.")
        else:
            self._pending.append(data[start:end])

    def _end(self) -> None:
        self.ended = True


# Resources ------------------------------------------------------------------------------------------------------------
async def list_files(request: Request, files: FileService, project_id: str) -> Response:
    rows, token = await files.list(project_id, *page_params(request))
    out: dict = {}
    if rows:
        out["files"] = [file_json(r, base_url(request)) for r in rows]
    if token:
        out["nextPageToken"] = token
    return JSONResponse(out)


async def get_file(request: Request, files: FileService, project_id: str, name: str) -> Response:
    if name.endswith(":download"):
        return await download(request, files, project_id, name.removesuffix(":download"))
    return JSONResponse(file_json(await files.get(project_id, name), base_url(request)))


async def delete_file(request: Request, files: FileService, project_id: str, name: str) -> Response:
    await files.delete(project_id, name)
    return JSONResponse({})


async def download(request: Request, files: FileService, project_id: str, name: str) -> Response:
    """Generated files only (batch outputs): as on the real API, what a user uploaded cannot be downloaded."""
    record = await files.get(project_id, name)
    if record.source != "GENERATED":
        raise ApiError.invalid("Only generated files can be downloaded. Files uploaded by users cannot be downloaded.")
    return StreamingResponse(files.blobs.read(record.blob), media_type=record.mime_type,
                             headers={"Content-Length": str(record.size_bytes)})
