"""Batch Mode: create, read, cancel and delete batch jobs, and run them.

A batch is a row (its state), its requests (a blob written at creation, one JSON line each: inline requests and
input files alike) and its results (a row each, `store/batches.py`). It runs as a leased job (`jobs.py`): the process
that creates it starts it at once; if that process dies, another takes the job over when the lease runs out, reads
which requests have a result and runs the rest. Results are saved in groups (a crash loses at most the unsaved ones,
which run again; none is written twice). Requests go through the same services as online traffic, at most
`batch_concurrency` at a time per process, so online requests never queue behind more than those.

A request that fails (a malformed line, a request that fails validation, a model error) gets an error entry for its
key; the batch still succeeds. What fails a creation: no requests, an input file that is not JSONL, too large, or
that names another model. Cancel stops the job within a second and keeps what was done; an ended batch is kept for
`batch_ttl_seconds`, a batch pending or running that long expires.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from ..config import Limits, ModelSpec
from ..embeddings import openai as openai_embeddings
from ..embeddings.protocol import (
    EmbedContentRequest,
    OpenAIEmbeddingsRequest,
    embedding_json,
)
from ..embeddings.service import EmbedInput, EmbedService, content_text
from ..errors import ApiError
from ..files.service import FileService
from ..generate.protocol import GenerateContentRequest, reply_json
from ..generate.service import GenerateService
from ..jobs import JobRunner
from ..openai import chat as openai_chat
from ..openai.protocol import ChatCompletionRequest
from ..store import NameTaken, Store, StoreUnavailable
from ..store.batches import LIVE, PENDING, RUNNING, TooManyBatches
from ..store.blobs import BlobStore, BlobUnavailable
from ..store.db import utcnow
from ..store.records import BatchRecord, BatchResult, Job, file_blob
from ..wire import parse
from .protocol import (
    CANCELLED,
    ENDED,
    EXPIRED,
    FAILED,
    SUCCEEDED,
    CreateBatchRequest,
    operation_bytes,
)

log = logging.getLogger("pollux.batches")

RUN_JOB = "batch"
GENERATE, EMBED = "generate", "embed"
CHAT, EMBEDDINGS = "chat", "embeddings"  # OpenAI's batches: /v1/chat/completions and /v1/embeddings lines
OPENAI_KINDS = (CHAT, EMBEDDINGS)
OPENAI_ENDPOINTS = {"/v1/chat/completions": CHAT, "/v1/embeddings": EMBEDDINGS}

# google.rpc.Code numbers: a result's error is a google.rpc.Status, as in the real API's batch output.
_GRPC = {"CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
         "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
         "ABORTED": 10, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14, "UNAUTHENTICATED": 16}
# Errors that say "later", not "never": the request is tried again after a pause (the engine was overloaded by
# online traffic, say) before it gets an error entry.
_TRANSIENT = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"})
_RETRY_PAUSES = (0.5, 1.0, 2.0, 4.0)
_SAVE_EVERY = 256     # results saved in one transaction
_WATCH_SECONDS = 0.5  # how often a running batch saves its results and looks for a cancel, a delete or expiry
_BIG_LINE = 64 * 1024  # lines longer than this are parsed off the event loop
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def not_found() -> ApiError:
    return ApiError.not_found("Requested entity was not found.")


def batch_id_of(name: str) -> str:
    return name.strip().removeprefix("batches/")


class BatchService:
    def __init__(self, store: Store, blobs: BlobStore, limits: Limits, jobs: JobRunner, files: FileService,
                 generate: GenerateService, embeddings: EmbedService, scratch: Path) -> None:
        self.store = store
        self.blobs = blobs
        self.limits = limits
        self.jobs = jobs
        self.files = files
        self.generate = generate
        self.embeddings = embeddings
        self.scratch = scratch
        self._slots = asyncio.Semaphore(limits.batch_concurrency)
        self._unowned: set[str] = set()  # inputs without a batch at the last sweep
        jobs.handle(RUN_JOB, self._run_job)

    # Creation ---------------------------------------------------------------------------------------------------
    async def create(self, project_id: str, kind: str, model: ModelSpec, req: CreateBatchRequest,
                     body_bytes: int) -> BatchRecord:
        batch = req.batch
        if batch is None:
            raise ApiError.invalid("* batch: a batch is required.\n")
        config = batch.input_config
        inline = config.requests if config is not None else None
        file_name = config.file_name if config is not None else None
        if (inline is None) == (file_name is None):
            raise ApiError.invalid("* batch.input_config: exactly one of requests and file_name must be set.\n")
        batch_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(36))
        record_blob = f"batches/{project_id}/{batch_id}/input"
        input_file: str | None = None
        if inline is not None:
            if body_bytes > self.limits.batch_inline_bytes:
                raise ApiError.invalid(f"The inline requests of a batch total at most "
                                       f"{self.limits.batch_inline_bytes} bytes; this request has {body_bytes}. "
                                       "Put larger batches in an input file.")
            items = inline.requests or []
            if not items:
                raise ApiError.invalid("* batch.input_config.requests.requests: a batch needs at least one request.\n")
            data, count = await asyncio.to_thread(_inline_lines, items, model.id)
            await self.blobs.write(record_blob, data)
        else:
            assert file_name is not None
            input_file, count, _ = await self._file_input(
                project_id, file_name, record_blob,
                lambda src, dest, file_id, limit: (_file_lines(src, dest, model.id, file_id, limit), None))
        return await self._insert(project_id, batch_id, kind, model.id, batch.display_name or "", input_file, count,
                                  batch.priority or 0, None)

    async def create_openai(self, project_id: str, input_file_id: str, endpoint: str, window: str,
                            metadata: dict[str, str] | None) -> BatchRecord:
        """OpenAI's `batches.create`: an uploaded file of `{"custom_id", "method", "url", "body"}` lines, all for
        `endpoint` and one model."""
        kind = OPENAI_ENDPOINTS.get(endpoint)
        if kind is None:
            raise ApiError.invalid(f"* endpoint: {endpoint!r} is not supported; batches run "
                                   f"{' and '.join(OPENAI_ENDPOINTS)}.\n")
        if window != "24h":
            raise ApiError.invalid(f"* completion_window: must be \"24h\", got {window!r}.\n")
        if metadata is not None and (len(metadata) > 16 or any(
                not isinstance(v, str) or len(k) > 64 or len(v) > 512 for k, v in metadata.items())):
            raise ApiError.invalid("* metadata: at most 16 pairs, keys of at most 64 characters and string values of "
                                   "at most 512.\n")
        batch_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(36))
        input_file, count, model_id = await self._file_input(
            project_id, input_file_id, f"batches/{project_id}/{batch_id}/input",
            lambda src, dest, file_id, limit: _openai_lines(src, dest, endpoint, file_id, limit))
        try:
            if kind == CHAT:
                model = self.generate.resolve(model_id or "", "v1beta", "generateContent")
            else:
                model = self.embeddings.resolve(model_id or "", "v1beta", "embedContent")
        except ApiError:
            await self.blobs.delete(f"batches/{project_id}/{batch_id}/input")
            raise
        options = {"endpoint": endpoint, "completion_window": window, "metadata": metadata}
        return await self._insert(project_id, batch_id, kind, model.id, "", input_file, count, 0, options)

    async def _file_input(self, project_id: str, name: str, blob: str, read: Callable[[Path, Path, str, int],
                                                                          tuple[int, str | None]]
                          ) -> tuple[str, int, str | None]:
        """An uploaded input file, read line by line (off the event loop) into the batch's input blob: its id, how
        many lines, and what `read` found besides (an OpenAI batch's model)."""
        record = await self.files.usable(project_id, name)
        if record.size_bytes > self.limits.max_file_bytes:
            raise ApiError.invalid(f"The input file files/{record.id} has {record.size_bytes} bytes; a batch input "
                                   f"file has at most {self.limits.max_file_bytes}.")
        source = await self.files.local_path(record)
        self.scratch.mkdir(parents=True, exist_ok=True)
        normal = self.scratch / f"{secrets.token_hex(8)}.input"
        try:
            count, found = await asyncio.to_thread(read, source, normal, record.id, self.limits.max_request_bytes)
            await self.blobs.write(blob, _read_file(normal))
        finally:
            normal.unlink(missing_ok=True)
        return record.id, count, found

    async def _insert(self, project_id: str, batch_id: str, kind: str, model_id: str, display_name: str,
                      input_file: str | None, count: int, priority: int, options: dict[str, Any] | None
                      ) -> BatchRecord:
        """The batch's row and its job, then the job started here."""
        now = utcnow()
        row = {"project_id": project_id, "id": batch_id, "kind": kind, "model": model_id,
               "display_name": display_name, "state": PENDING, "input_file": input_file, "request_count": count,
               "priority": priority, "options": options, "output_file": None, "error": None, "cancel_requested": 0,
               "ending": None,
               "create_time": now, "update_time": now, "end_time": None,
               "expire_time": now + timedelta(seconds=self.limits.batch_ttl_seconds)}
        job = self.jobs.new(RUN_JOB, {"project_id": project_id, "batch_id": batch_id}, project_id)
        try:
            await self.store.batches.create(row, job, self.limits.max_live_batches)
        except BaseException as exc:
            await self.blobs.delete(f"batches/{project_id}/{batch_id}/input")
            if isinstance(exc, TooManyBatches):
                raise ApiError("RESOURCE_EXHAUSTED", f"The project has {exc.args[0]} batches pending or running, "
                               f"as many as it may ({self.limits.max_live_batches}). Wait for one to end, or cancel "
                               "one.") from None
            raise
        self.jobs.run_soon(Job(job["id"], job["kind"], job["project_id"], job["payload"], job["attempts"],
                               job["lease_owner"]))
        created = await self.store.batches.get(project_id, batch_id)
        if created is None:  # deleted in the instant since (another request of the project)
            raise not_found()
        return created

    # Reading ----------------------------------------------------------------------------------------------------
    async def get(self, project_id: str, name: str) -> BatchRecord:
        record = await self.store.batches.get(project_id, batch_id_of(name))
        if record is None:
            raise not_found()
        return record

    async def operation(self, record: BatchRecord, with_results: bool = True) -> bytes:
        """The batch as an Operation; an ended batch of inline requests carries its results."""
        counts = (await self.store.batches.counts(record.project_id, [record.id]))[record.id]
        inline: list[str] | None = None
        if with_results and record.state in ENDED and record.input_file is None and not record.error:
            inline = await self._bodies(record)
        if inline is not None and len(inline) > 1000:  # a large output is encoded off the event loop
            return await asyncio.to_thread(operation_bytes, record, counts, inline)
        return operation_bytes(record, counts, inline)

    async def list(self, project_id: str, page_size: int | None, page_token: str | None
                   ) -> tuple[list[bytes], str | None]:
        if page_size is not None and page_size < 0:
            raise ApiError.invalid("* ListBatchesRequest.page_size: page_size must not be negative\n")
        size = min(page_size or self.limits.batches_page_default, self.limits.batches_page_max)
        before = None
        if page_token:
            try:
                created, _, batch_id = base64.urlsafe_b64decode(page_token.encode()).decode().partition("|")
                before = (datetime.fromisoformat(created), batch_id)
            except ValueError:
                raise ApiError.invalid("Invalid page token.") from None
        records = await self.store.batches.list(project_id, size + 1, before)
        token = None
        if len(records) > size:
            records = records[:size]
            last = records[-1]
            token = base64.urlsafe_b64encode(f"{last.create_time.isoformat()}|{last.id}".encode()).decode()
        counts = await self.store.batches.counts(project_id, [r.id for r in records])
        # Listings leave inline results out: a page of large batches would be one enormous response.
        return [operation_bytes(r, counts[r.id], None) for r in records], token

    async def _bodies(self, record: BatchRecord) -> list[str]:
        bodies: list[str] = []
        after = -1
        while True:
            page = await self.store.batches.results(record.project_id, record.id, after, 2000)
            if not page:
                return bodies
            bodies.extend(r.body for r in page)
            after = page[-1].idx

    # Changes ----------------------------------------------------------------------------------------------------
    async def cancel(self, project_id: str, name: str) -> None:
        """A pending batch is cancelled at once; a running one by its runner, within a second. An ended batch stays
        as it is."""
        batch_id = batch_id_of(name)
        if not await self.store.batches.request_cancel(project_id, batch_id):
            raise not_found()
        record = await self.store.batches.get(project_id, batch_id)
        if record is not None and record.state == PENDING:  # not started: its runner will find it ended
            await self._end(record, CANCELLED)

    async def delete(self, project_id: str, name: str) -> None:
        """The batch and its results go (a running one stops: its runner finds the row gone). A responses file it
        wrote is a file of its own, which expires as files do."""
        batch_id = batch_id_of(name)
        if not await self.store.batches.delete(project_id, batch_id):
            raise not_found()
        await self.blobs.delete(f"batches/{project_id}/{batch_id}/input")

    # Housekeeping -----------------------------------------------------------------------------------------------
    async def sweep(self) -> int:
        """Expire batches pending or running past their time, forget ended ones past theirs, and delete inputs no
        live batch needs (a crash between a batch's end and its input's deletion). Returns how many changed."""
        changed = 0
        for record in await self.store.batches.expiring():
            if record.state in LIVE:
                if await self._end(record, EXPIRED):
                    changed += 1
            elif await self.store.batches.delete(record.project_id, record.id):
                changed += 1
        for record in await self.store.batches.stalled_endings(
                utcnow() - timedelta(seconds=2 * self.limits.job_lease_seconds)):
            if await self._end(record, record.ending or FAILED):  # its ender died mid-way
                changed += 1
        await self.store.batches.drop_orphan_results()
        # An input is written just before its batch's row: one without a row is deleted only when it still has none
        # at this process's next sweep, so a batch being created is never robbed of its input.
        stored = await self.blobs.keys("batches")
        rows = await self.store.batches.states()
        unowned = set()
        for key in stored:
            parts = key.split("/")
            if len(parts) < 3:
                continue
            state = rows.get((parts[1], parts[2]))
            if state is None:
                unowned.add(key)
            if (state is None and key in self._unowned) or (state is not None and state not in LIVE):
                await self.blobs.delete(key)
        self._unowned = unowned
        return changed

    # Running ----------------------------------------------------------------------------------------------------
    async def _run_job(self, job: Job) -> None:
        record = await self.store.batches.get(job.payload["project_id"], job.payload["batch_id"])
        if record is None or record.state not in LIVE:
            return
        if record.ending is not None:  # an end that a crash interrupted
            await self._end(record, record.ending)
            return
        if record.cancel_requested:
            await self._end(record, CANCELLED)
            return
        if record.expire_time <= utcnow():
            await self._end(record, EXPIRED)
            return
        try:
            run = self._request_runner(record)
        except ApiError as err:  # the batch's model is no longer served
            await self._end(record, FAILED, error=_status(err))
            return
        if record.state == PENDING and not await self.store.batches.move(record.project_id, record.id, RUNNING,
                                                                         came_from=(PENDING,)):
            return  # cancelled, deleted or expired in the meantime
        outcome = await _Run(self, record, run).go()
        if outcome is not None:
            fresh = await self.store.batches.get(record.project_id, record.id)
            if fresh is not None:
                await self._end(fresh, outcome)

    def _request_runner(self, record: BatchRecord) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
        """What runs one request of this batch (its JSON object) and returns the response's JSON object."""
        if record.kind == CHAT:
            self.generate.resolve(record.model, "v1beta", "generateContent")  # still served

            async def chat(request: dict[str, Any]) -> dict[str, Any]:
                req = parse(ChatCompletionRequest, orjson.dumps(request))
                if req.model.removeprefix("models/") != record.model:
                    raise ApiError.invalid(f"* model: every request of this batch is for {record.model}.\n")
                return await openai_chat.complete(self.generate, record.project_id, req, "v1beta", background=True)
            return chat
        if record.kind == EMBEDDINGS:
            self.embeddings.resolve(record.model, "v1beta", "embedContent")

            async def embeddings(request: dict[str, Any]) -> dict[str, Any]:
                req = parse(OpenAIEmbeddingsRequest, orjson.dumps(request))
                if (req.model or "").removeprefix("models/") != record.model:
                    raise ApiError.invalid(f"* model: every request of this batch is for {record.model}.\n")
                return await openai_embeddings.embed(self.embeddings, req, "v1beta")
            return embeddings
        if record.kind == EMBED:
            model = self.embeddings.resolve(record.model, "v1beta", "embedContent")

            async def embed(request: dict[str, Any]) -> dict[str, Any]:
                req = parse(EmbedContentRequest, orjson.dumps(request))
                where = "EmbedContentRequest."
                item = EmbedInput(content_text(req.content, where), req.task_type, req.title,
                                  req.output_dimensionality, where)
                result = await self.embeddings.embed(model, [item], "EmbedContentRequest.content")
                return {"embedding": embedding_json(result.vectors[0])}
            return embed
        model = self.generate.resolve(record.model, "v1beta", "generateContent")

        async def generate(request: dict[str, Any]) -> dict[str, Any]:
            req = parse(GenerateContentRequest, orjson.dumps(request))
            return reply_json(await self.generate.generate(model, req, record.project_id, background=True))
        return generate

    async def _end(self, record: BatchRecord, state: str, error: dict[str, Any] | None = None) -> bool:
        """End a live batch in `state`: first closed to new results (a runner elsewhere stops at its next save), then
        its output files written from the results stored (a batch of an input file; what was done, when cancelled or
        expired), then settled. False if another change ended it first. A crash in between leaves it ending, which
        the next sweep (or its job) finishes."""
        if not await self.store.batches.start_ending(record.project_id, record.id, state):
            return False
        values: dict[str, Any] = {}
        if record.input_file is not None and error is None:
            if record.kind in OPENAI_KINDS:  # OpenAI's: the answers in one file, the failures in another
                values["output_file"] = await self._write_file(record, f"batch-{record.id}", ok=True)
                failures = await self._write_file(record, f"batch-{record.id}-errors", ok=False)
                values["options"] = {**record.options, "error_file": failures}
            else:
                values["output_file"] = await self._write_file(record, f"batch-{record.id}")
        now = utcnow()
        ended = await self.store.batches.end(
            record.project_id, record.id, end_time=now, update_time=now, error=error,
            expire_time=now + timedelta(seconds=self.limits.batch_ttl_seconds), **values)
        if ended:
            await self.blobs.delete(record.input_blob)
            log.info("batch %s: %s", record.id, state)
        return ended

    async def _write_file(self, record: BatchRecord, file_id: str, ok: bool | None = None) -> str | None:
        """Results as a generated file, one line each in input order (only the answers, `ok`, or only the failures);
        None when there is none of them for a file of failures. Written once: a run that finds it written (it crashed
        after writing) keeps it."""
        if await self.store.files.get(record.project_id, file_id) is not None:
            return file_id
        count = 0

        async def lines() -> AsyncIterator[bytes]:
            nonlocal count
            after = -1
            while True:
                page = await self.store.batches.results(record.project_id, record.id, after, 2000)
                if not page:
                    return
                chosen = [r for r in page if ok is None or r.ok == ok]
                count += len(chosen)
                yield "".join(r.body + "\n" for r in chosen).encode()
                after = page[-1].idx

        blob = file_blob(record.project_id, file_id)
        written = await self.blobs.write(blob, lines())
        if not count and ok is False:
            await self.blobs.delete(blob)
            return None
        row = self.files.new_row(record.project_id, file_id, file_id, "application/jsonl", written.size,
                                 written.sha256, source="GENERATED")
        row.update(state="ACTIVE")
        with contextlib.suppress(NameTaken):  # written by another run meanwhile: one file, the same lines
            await self.store.files.insert(row)
        return file_id


class _Run:
    """One run of a batch's remaining requests."""

    def __init__(self, service: BatchService, record: BatchRecord,
                 run: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> None:
        self.service = service
        self.record = record
        self.run = run
        self.store = service.store
        self.pending: list[BatchResult] = []
        self.stop: str | None = None  # why the run stops early: a state to end in, or "" (deleted, or ended)
        self.tasks: set[asyncio.Task[None]] = set()
        self._halted = asyncio.Event()
        self._saving = asyncio.Lock()

    async def go(self) -> str | None:
        """Run what has no result yet. Returns the state to end in, or None when there is nothing to do."""
        record = self.record
        done = await self.store.batches.done(record.project_id, record.id)
        watch = asyncio.create_task(self._watch())
        try:
            async with aclosing(self._lines()) as lines:
                async for idx, line in lines:
                    if self.stop is not None:
                        break
                    if idx in done:
                        continue
                    if not await self._slot():
                        break
                    task = asyncio.create_task(self._one(idx, line))
                    self.tasks.add(task)
                    # Released when the task ends, even one cancelled before it started.
                    task.add_done_callback(self._finished)
            while self.tasks:
                await asyncio.wait(set(self.tasks))
        finally:
            watch.cancel()
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(watch, *self.tasks, return_exceptions=True)
        if self.stop != "":
            await self._save()  # refused (and the stop set) if the batch ended meanwhile
        if self.stop == "":
            return None  # deleted, or ended by another change
        return self.stop or SUCCEEDED

    async def _slot(self) -> bool:
        """One of the process's `batch_concurrency` places for a request of this run; False (and no place held) once
        the run is stopping, even while it waits for one."""
        slots = self.service._slots
        if self.stop is not None:
            return False
        acquire = asyncio.ensure_future(slots.acquire())
        halted = asyncio.ensure_future(self._halted.wait())
        try:
            await asyncio.wait({acquire, halted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            halted.cancel()
            acquire.cancel()  # no effect once it has acquired
            held = acquire.done() and not acquire.cancelled()
            if held and self.stop is not None:
                slots.release()
        return held and self.stop is None

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.service._slots.release()

    async def _lines(self) -> AsyncIterator[tuple[int, dict[str, Any]]]:
        """The input's lines in order. Only each new block is searched for line ends, so a long line (an inline
        request with a large image) costs its length once, not once per block."""
        idx = 0
        pieces: list[bytes] = []
        async for block in self.service.blobs.read(self.record.input_blob):
            start = 0
            while (end := block.find(b"\n", start)) != -1:
                pieces.append(block[start:end])
                raw = b"".join(pieces)
                pieces = []
                start = end + 1
                if raw:
                    yield idx, await _loads(raw)
                    idx += 1
            pieces.append(block[start:])
        raw = b"".join(pieces)
        if raw.strip():
            yield idx, await _loads(raw)

    async def _one(self, idx: int, line: dict[str, Any]) -> None:
        outcome = await self._attempt(line)
        body = orjson.dumps(_entry(self.record, idx, line, outcome), option=orjson.OPT_SERIALIZE_NUMPY).decode()
        self.pending.append(BatchResult(idx, not isinstance(outcome, ApiError), body))
        if len(self.pending) >= _SAVE_EVERY:
            await self._save()

    async def _attempt(self, line: dict[str, Any]) -> dict[str, Any] | ApiError:
        """The request's response, or the error it ends with."""
        if "e" in line:
            return ApiError.invalid(line["e"])
        for pause in (*_RETRY_PAUSES, None):
            try:
                return await self.run(line["r"])
            except ApiError as err:
                if err.status in _TRANSIENT and pause is not None:
                    await asyncio.sleep(pause)
                    continue
                return err
            except (StoreUnavailable, BlobUnavailable):
                raise  # not the request's fault: the job is tried again later, with the results saved so far
            except Exception:  # noqa: BLE001 - a bug met by one request fails that request alone
                log.exception("batch %s: a request failed", self.record.id)
                return ApiError("INTERNAL", "An internal error has occurred.")
        raise AssertionError("unreachable")

    async def _save(self) -> None:
        async with self._saving:
            results, self.pending = self.pending, []
            try:
                kept = await self.store.batches.save(self.record.project_id, self.record.id, results)
            except BaseException:
                self.pending = results + self.pending
                raise
        if not kept:  # the batch is ending, has ended or is gone: what is not stored is not its result any more
            self._halt("")

    def _halt(self, why: str) -> None:
        self._halted.set()
        if self.stop is None:
            self.stop = why
            log.info("batch %s: stopping (%s)", self.record.id, why or "ended elsewhere or deleted")
        for task in list(self.tasks):
            task.cancel()

    async def _watch(self) -> None:
        """Save results every half second, and stop the run once the batch is cancelled, deleted or expired."""
        record = self.record
        while self.stop is None:
            await asyncio.sleep(_WATCH_SECONDS)
            await self._save()
            fresh = await self.store.batches.get(record.project_id, record.id)
            if fresh is None or fresh.state not in LIVE or fresh.ending is not None:
                self._halt("")
            elif fresh.cancel_requested:
                self._halt(CANCELLED)
            elif fresh.expire_time <= utcnow():
                self._halt(EXPIRED)


async def _loads(raw: bytes) -> dict[str, Any]:
    return orjson.loads(raw) if len(raw) < _BIG_LINE else await asyncio.to_thread(orjson.loads, raw)


def _entry(record: BatchRecord, idx: int, line: dict[str, Any], outcome: dict[str, Any] | ApiError
           ) -> dict[str, Any]:
    """A request's result as its batch's output carries it: an OpenAI batch's output line, a line of the native
    responses file (with the input's key) or an inline response (with the request's metadata)."""
    failed = isinstance(outcome, ApiError)
    if record.kind in OPENAI_KINDS:
        request_id = f"batch_req_{record.id[:12]}_{idx}"
        out: dict[str, Any] = {"id": request_id, "custom_id": line.get("k")}
        if failed and "e" in line:  # not a request at all
            out.update(response=None, error={"code": "invalid_request", "message": line["e"]})
        else:
            body = outcome.body() if failed else outcome
            out.update(response={"status_code": outcome.code if failed else 200, "request_id": request_id,
                                 "body": body}, error=None)
        return out
    entry: dict[str, Any] = {"error": _status(outcome)} if failed else {"response": outcome}
    if record.input_file is not None:
        if "k" in line:
            entry["key"] = line["k"]
    elif "m" in line:
        entry["metadata"] = line["m"]
    return entry


def _status(err: ApiError) -> dict[str, Any]:
    status: dict[str, Any] = {"code": _GRPC.get(err.status, 2), "message": err.message}
    if err.details:
        status["details"] = err.details
    return status


def _model_named(request: dict[str, Any]) -> str | None:
    named = request.get("model")
    return named.removeprefix("models/") if isinstance(named, str) and named else None


def _inline_lines(items: list[Any], model_id: str) -> tuple[bytes, int]:
    """The inline requests as input lines: `{"m": metadata, "r": request}`, or `{"e": why}` for one without a
    request. A request for another model fails the creation."""
    out: list[bytes] = []
    for i, item in enumerate(items):
        line: dict[str, Any] = {}
        if item.metadata is not None:
            line["m"] = item.metadata
        if item.request is None:
            line["e"] = f"* batch.input_config.requests.requests[{i}].request: a request is required.\n"
        else:
            named = _model_named(item.request)
            if named is not None and named != model_id:
                raise ApiError.invalid(f"* batch.input_config.requests.requests[{i}].request.model: the batch runs "
                                       f"models/{model_id}; this request names models/{named}.\n")
            line["r"] = item.request
        out.append(orjson.dumps(line))
    return b"\n".join(out) + b"\n", len(out)


def _file_lines(source: Path, dest: Path, model_id: str, file_id: str, max_line: int) -> int:
    """An input file's lines (`{"key", "request"}` each) as input lines: `{"k": key, "r": request}`, or `{"e": why}`
    for a line that is not one. A file with no request at all is not a batch input; one naming another model fails
    the creation. Runs in a thread: it reads the whole file."""
    count = valid = 0
    with open(source, "rb") as src, open(dest, "wb") as out:
        for number, raw in _raw_lines(src, max_line):
            line: dict[str, Any] = {}
            obj = _json_object(raw, number, max_line, line)
            if obj is not None:
                if "key" in obj:
                    line["k"] = obj["key"]
                request = obj.get("request")
                if not isinstance(request, dict):
                    line["e"] = f"Line {number} has no request object."
                else:
                    named = _model_named(request)
                    if named is not None and named != model_id:
                        raise ApiError.invalid(f"Line {number} of files/{file_id} names models/{named}; the batch "
                                               f"runs models/{model_id}.")
                    line["r"] = request
                    valid += 1
            out.write(orjson.dumps(line) + b"\n")
            count += 1
    if not valid:
        raise ApiError.invalid(f"files/{file_id} is not a batch input file: it must be JSONL, one "
                               '{"key": ..., "request": {...}} object per line.')
    return count


def _raw_lines(src: BinaryIO, max_line: int) -> Iterator[tuple[int, bytes | None]]:
    """The file's non-blank lines with their numbers; None for one longer than `max_line` (never read whole)."""
    number = 0
    while raw := src.readline(max_line + 1):
        number += 1
        if len(raw) > max_line and not raw.endswith(b"\n"):
            while (rest := src.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass  # the rest of an overlong line
            yield number, None
        elif raw.strip():
            yield number, raw


def _json_object(raw: bytes | None, number: int, max_line: int, line: dict[str, Any]) -> dict[str, Any] | None:
    """The line's JSON object, or None with why in `line["e"]`."""
    if raw is None:
        line["e"] = f"Line {number} is longer than {max_line} bytes."
        return None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        line["e"] = f"Line {number} is not valid JSON: {exc}."
        return None
    if not isinstance(obj, dict):
        line["e"] = f"Line {number} is not a JSON object."
        return None
    return obj


def _openai_lines(source: Path, dest: Path, endpoint: str, file_id: str, max_line: int) -> tuple[int, str | None]:
    """An OpenAI batch file's lines (`{"custom_id", "method", "url", "body"}`) as input lines: `{"k": custom_id, "r":
    body}`, or `{"e": why}`. Every line must be for `endpoint` and one model, which is returned. Runs in a thread."""
    count = 0
    model: str | None = None
    with open(source, "rb") as src, open(dest, "wb") as out:
        for number, raw in _raw_lines(src, max_line):
            line: dict[str, Any] = {}
            obj = _json_object(raw, number, max_line, line)
            if obj is not None:
                if "custom_id" in obj:
                    line["k"] = obj["custom_id"]
                body = obj.get("body")
                url = obj.get("url")
                if url is not None and url != endpoint:
                    raise ApiError.invalid(f"Line {number} of files/{file_id} is for {url}; the batch's endpoint is "
                                           f"{endpoint}.")
                named = body.get("model") if isinstance(body, dict) else None
                if not isinstance(body, dict):
                    line["e"] = f"Line {number} has no body object."
                elif not isinstance(named, str) or not named:
                    line["e"] = f"Line {number}: the body names no model."
                elif model is not None and named.removeprefix("models/") != model:
                    raise ApiError.invalid(f"Line {number} of files/{file_id} is for {named}; a batch runs one model "
                                           f"and its first request is for {model}.")
                else:
                    model = named.removeprefix("models/")
                    line["r"] = body
            out.write(orjson.dumps(line) + b"\n")
            count += 1
    if model is None:
        raise ApiError.invalid(f"files/{file_id} is not a batch input file: it must be JSONL, one "
                               '{"custom_id": ..., "method": "POST", "url": ..., "body": {...}} object per line.')
    return count, model


async def _read_file(path: Path) -> AsyncIterator[bytes]:
    with open(path, "rb") as fh:
        while block := await asyncio.to_thread(fh.read, 1 << 20):
            yield block
