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

Here: the resource (creation, reading, cancel, delete, expiry) and a batch's end (its output files). `inputs.py` turns
inline requests and input files into the input's lines; `run.py` runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

from ..config import Limits, ModelSpec
from ..embeddings import openai as openai_embeddings
from ..embeddings.protocol import EmbedContentRequest, OpenAIEmbeddingsRequest, embedding_json
from ..embeddings.service import EmbedInput, EmbedService, content_text
from ..errors import ApiError
from ..files.service import FileService
from ..generate.protocol import GenerateContentRequest, reply_json
from ..generate.service import GenerateService
from ..jobs import JobRunner
from ..openai import chat as openai_chat
from ..openai.protocol import ChatCompletionRequest
from ..store import NameTaken, Store
from ..store.batches import LIVE, PENDING, RUNNING, TooManyBatches
from ..store.blobs import BlobStore
from ..store.db import utcnow
from ..store.records import BatchCounts, BatchRecord, BatchResult, Job, batch_input_blob, file_blob
from ..wire import page_limit, page_of, page_position, parse
from .inputs import file_lines, inline_lines, openai_lines, read_file
from .protocol import (CANCELLED, CHAT, EMBED, EMBEDDINGS, ENDED, EXPIRED, FAILED, OPENAI_ENDPOINTS, OPENAI_KINDS,
                       CreateBatchRequest, operation_bytes)
from .run import Run, status

log = logging.getLogger("pollux.batches")

RUN_JOB = "batch"

_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def not_found() -> ApiError:
    return ApiError.not_found("Requested entity was not found.")


def _new_id() -> str:
    """36 lowercase letters and digits, as the real API's batch ids."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(36))


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
        jobs.handle(RUN_JOB, self._run_job, long=True)

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
        batch_id = _new_id()
        record_blob = batch_input_blob(project_id, batch_id)
        input_file: str | None = None
        if inline is not None:
            if body_bytes > self.limits.batch_inline_bytes:
                raise ApiError.invalid(f"The inline requests of a batch total at most "
                                       f"{self.limits.batch_inline_bytes} bytes; this request has {body_bytes}. "
                                       "Put larger batches in an input file.")
            items = inline.requests or []
            if not items:
                raise ApiError.invalid("* batch.input_config.requests.requests: a batch needs at least one request.\n")
            data, count = await asyncio.to_thread(inline_lines, items, model.id)
            await self.blobs.write(record_blob, data)
        else:
            assert file_name is not None
            input_file, count, _ = await self._file_input(
                project_id, file_name, record_blob,
                lambda src, dest, file_id, limit: (file_lines(src, dest, model.id, file_id, limit), None))
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
        batch_id = _new_id()
        input_file, count, model_id = await self._file_input(
            project_id, input_file_id, batch_input_blob(project_id, batch_id),
            lambda src, dest, file_id, limit: openai_lines(src, dest, endpoint, file_id, limit))
        try:
            if kind == CHAT:
                model = self.generate.resolve(model_id or "", "v1beta", "generateContent")
            else:
                model = self.embeddings.resolve(model_id or "", "v1beta", "embedContent")
        except ApiError:
            await self.blobs.delete(batch_input_blob(project_id, batch_id))
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
            await self.blobs.write(blob, read_file(normal))
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
            await self.blobs.delete(batch_input_blob(project_id, batch_id))
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

    async def counts(self, record: BatchRecord) -> BatchCounts:
        """How many of its requests have answered and failed so far."""
        return (await self.store.batches.counts(record.project_id, [record.id]))[record.id]

    async def operation(self, record: BatchRecord) -> bytes:
        """The batch as an Operation; an ended batch of inline requests carries its results."""
        counts = await self.counts(record)
        inline: list[str] | None = None
        if record.state in ENDED and record.input_file is None and not record.error:
            inline = [r.body async for page in self._result_pages(record) for r in page]
        if inline is not None and len(inline) > 1000:  # a large output is encoded off the event loop
            return await asyncio.to_thread(operation_bytes, record, counts, inline)
        return operation_bytes(record, counts, inline)

    async def list(self, project_id: str, page_size: int | None, token: str | None
                   ) -> tuple[list[bytes], str | None]:
        size = page_limit(page_size, self.limits.batches_page_default, self.limits.batches_page_max,
                              "ListBatchesRequest")
        records, next_token = page_of(await self.store.batches.list(project_id, size + 1, page_position(token)), size)
        counts = await self.store.batches.counts(project_id, [r.id for r in records])
        # Listings leave inline results out: a page of large batches would be one enormous response.
        return [operation_bytes(r, counts[r.id], None) for r in records], next_token

    async def _result_pages(self, record: BatchRecord) -> AsyncIterator[list[BatchResult]]:
        """Its stored results in input order, a page at a time."""
        after = -1
        while page := await self.store.batches.results(record.project_id, record.id, after, 2000):
            yield page
            after = page[-1].idx

    async def list_openai(self, project_id: str, after: str | None, limit: int
                          ) -> tuple[list[tuple[BatchRecord, BatchCounts]], bool]:
        """OpenAI's listing: its batches only, newest first, after the batch named `after`; and whether more follow."""
        before = None
        if after:
            try:
                cursor = await self.get(project_id, after)
            except ApiError:
                raise ApiError.invalid(f"* after: no batch {after!r}.\n") from None
            before = (cursor.create_time, cursor.id)
        records = await self.store.batches.list(project_id, limit + 1, before, kinds=OPENAI_KINDS)
        counts = await self.store.batches.counts(project_id, [r.id for r in records[:limit]])
        return [(r, counts[r.id]) for r in records[:limit]], len(records) > limit

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
        await self.blobs.delete(batch_input_blob(project_id, batch_id))

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
            await self._end(record, FAILED, error=status(err))
            return
        if record.state == PENDING and not await self.store.batches.move(record.project_id, record.id, RUNNING,
                                                                         came_from=(PENDING,)):
            return  # cancelled, deleted or expired in the meantime
        outcome = await Run(self.store, self.blobs, self._slots, record, run).go()
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
            async for page in self._result_pages(record):
                chosen = [r for r in page if ok is None or r.ok == ok]
                count += len(chosen)
                yield "".join(r.body + "\n" for r in chosen).encode()

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
