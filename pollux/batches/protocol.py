"""Wire types of Batch Mode: the `{"batch": {...}}` a create sends, and the long-running `Operation` that every
route answers with (reference/wire-protocol.md §10)."""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from ..files.protocol import timestamp
from ..store.records import BatchCounts, BatchRecord
from ..wire import ProtoModel

_TYPES = "type.googleapis.com/google.ai.generativelanguage.v1main."

# What a batch runs: generateContent or embedContent requests (Batch Mode), or OpenAI's chat completions or
# embeddings (its Batch API).
GENERATE, EMBED = "generate", "embed"
CHAT, EMBEDDINGS = "chat", "embeddings"
OPENAI_KINDS = (CHAT, EMBEDDINGS)
OPENAI_ENDPOINTS = {"/v1/chat/completions": CHAT, "/v1/embeddings": EMBEDDINGS}

SUCCEEDED, FAILED = "BATCH_STATE_SUCCEEDED", "BATCH_STATE_FAILED"
CANCELLED, EXPIRED = "BATCH_STATE_CANCELLED", "BATCH_STATE_EXPIRED"
ENDED = (SUCCEEDED, FAILED, CANCELLED, EXPIRED)


class InlinedRequest(ProtoModel):
    # Each request is checked when it runs: one that fails validation gets an error entry, not the whole batch.
    request: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


class InlinedRequests(ProtoModel):
    requests: list[InlinedRequest] | None = None


class InputConfig(ProtoModel):
    file_name: str | None = None
    requests: InlinedRequests | None = None


class Batch(ProtoModel):
    display_name: str | None = None
    input_config: InputConfig | None = None
    priority: int | None = None
    # Output-only on the real API; a client that echoes a batch back may send them.
    name: str | None = None
    model: str | None = None
    state: str | None = None


class CreateBatchRequest(ProtoModel):
    batch: Batch | None = None


def _stats(record: BatchRecord, counts: BatchCounts) -> dict[str, str]:
    # int64 as strings, and zero counts left out, as proto3 JSON writes them.
    pending = 0 if record.state in ENDED else record.request_count - counts.succeeded - counts.failed
    stats = {"requestCount": record.request_count, "successfulRequestCount": counts.succeeded,
             "failedRequestCount": counts.failed, "pendingRequestCount": pending}
    return {k: str(v) for k, v in stats.items() if v}


def operation_bytes(record: BatchRecord, counts: BatchCounts, inline: list[str] | None) -> bytes:
    """The batch as the Operation the SDKs and the REST docs read. `inline`: the inline results in input order (each
    already JSON), for a batch of inline requests that has ended."""
    embed = record.kind == "embed"
    name = f"batches/{record.id}"
    meta: dict[str, Any] = {
        "@type": _TYPES + ("EmbedContentBatch" if embed else "GenerateContentBatch"),
        "model": f"models/{record.model}",
        "displayName": record.display_name,
    }
    if record.input_file:
        meta["inputConfig"] = {"fileName": f"files/{record.input_file}"}
    meta.update(createTime=timestamp(record.create_time), updateTime=timestamp(record.update_time))
    if record.end_time is not None:
        meta["endTime"] = timestamp(record.end_time)
    meta["batchStats"] = _stats(record, counts)
    meta["state"] = record.state
    meta["name"] = name
    if record.priority:
        meta["priority"] = str(record.priority)
    operation: dict[str, Any] = {"name": name, "metadata": meta}
    output: dict[str, Any] | None = None
    if record.output_file:
        output = {"responsesFile": f"files/{record.output_file}"}
    elif inline is not None:
        output = {"inlinedResponses": {"inlinedResponses": _Raw}}
    if output is not None:
        meta["output"] = output
    if record.state in ENDED:
        operation["done"] = True
        if record.error:
            operation["error"] = record.error
        elif output is not None:
            operation["response"] = {"@type": _TYPES + ("EmbedContentBatchOutput" if embed else
                                                        "GenerateContentBatchOutput"), **output}
    body = orjson.dumps(operation)
    if inline is None:
        return body
    # The results are stored as JSON already: spliced in, not parsed and written again.
    return body.replace(_RAW_MARK, b"[" + ",".join(inline).encode() + b"]")


# Where the inline results go in the encoded operation: a string no request can send (drawn at start).
_Raw = f"pollux-inline-results-{secrets.token_hex(16)}"
_RAW_MARK = orjson.dumps(_Raw)
