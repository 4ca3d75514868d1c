"""Wire types of generateContent, streamGenerateContent and countTokens (google.ai.generativelanguage v1beta).

Fields typed `dict[str, Any]` or `Any` are user data (proto `Struct`/`Value`): passed through, never re-cased.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator

from ..engines.base import TokenCount
from ..schemas import lower_type_names
from ..wire import Double, Float, Int32, Int64, ProtoModel, enum
from .results import Chunk, OutPart, Reply, Usage

Modality = enum("GenerationConfig.Modality", "MODALITY_UNSPECIFIED", "TEXT", "IMAGE", "AUDIO", "VIDEO")
MediaResolution = enum("MediaResolution", "MEDIA_RESOLUTION_UNSPECIFIED", "MEDIA_RESOLUTION_LOW",
                       "MEDIA_RESOLUTION_MEDIUM", "MEDIA_RESOLUTION_HIGH", "MEDIA_RESOLUTION_ULTRA_HIGH")
ThinkingLevel = enum("ThinkingConfig.ThinkingLevel", "THINKING_LEVEL_UNSPECIFIED", "MINIMAL", "LOW", "MEDIUM", "HIGH")
FunctionCallingMode = enum("FunctionCallingConfig.Mode", "MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED")
HarmCategory = enum("HarmCategory", "HARM_CATEGORY_UNSPECIFIED", "HARM_CATEGORY_DEROGATORY", "HARM_CATEGORY_TOXICITY",
                    "HARM_CATEGORY_VIOLENCE", "HARM_CATEGORY_SEXUAL", "HARM_CATEGORY_MEDICAL",
                    "HARM_CATEGORY_DANGEROUS", "HARM_CATEGORY_HARASSMENT", "HARM_CATEGORY_HATE_SPEECH",
                    "HARM_CATEGORY_SEXUALLY_EXPLICIT", "HARM_CATEGORY_DANGEROUS_CONTENT",
                    "HARM_CATEGORY_CIVIC_INTEGRITY")
HarmBlockThreshold = enum("SafetySetting.HarmBlockThreshold", "HARM_BLOCK_THRESHOLD_UNSPECIFIED",
                          "BLOCK_LOW_AND_ABOVE", "BLOCK_MEDIUM_AND_ABOVE", "BLOCK_ONLY_HIGH", "BLOCK_NONE", "OFF")
SchemaType = enum("Type", "TYPE_UNSPECIFIED", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL")
Language = enum("ExecutableCode.Language", "LANGUAGE_UNSPECIFIED", "PYTHON")
Outcome = enum("CodeExecutionResult.Outcome", "OUTCOME_UNSPECIFIED", "OUTCOME_OK", "OUTCOME_FAILED",
               "OUTCOME_DEADLINE_EXCEEDED")
Scheduling = enum("FunctionResponse.Scheduling", "SCHEDULING_UNSPECIFIED", "SILENT", "WHEN_IDLE", "INTERRUPT")
Behavior = enum("FunctionDeclaration.Behavior", "UNSPECIFIED", "BLOCKING", "NON_BLOCKING")
# Newer Part fields (google-genai 3.x sends them on the Developer API path; see `Part`).
MediaProcessing = enum("MediaProcessing", "MEDIA_PROCESSING_UNSPECIFIED", "STATIC", "AGENTIC")
VideoContentLayer = enum("VideoMetadata.ContentLayer", "CONTENT_LAYER_UNSPECIFIED", "FRAMES", "AUDIO", "TRANSCRIPT")
DocumentContentLayer = enum("DocumentMetadata.ContentLayer", "CONTENT_LAYER_UNSPECIFIED", "PAGE_IMAGE", "PAGE_TEXT")
SpreadsheetContentLayer = enum("SpreadsheetMetadata.ContentLayer", "CONTENT_LAYER_UNSPECIFIED", "DATA", "FORMULAS",
                               "VISUAL", "COLLECTION")
ToolType = enum("ToolType", "TOOL_TYPE_UNSPECIFIED", "GOOGLE_SEARCH_WEB", "GOOGLE_SEARCH_IMAGE", "URL_CONTEXT",
                "GOOGLE_MAPS", "FILE_SEARCH", "MEDIA_PROCESSING")


# Content ------------------------------------------------------------------------------------------------------------
# A JSON Schema field: any JSON, with Gemini's upper-case type names read as JSON Schema's.
JsonSchema = Annotated[Any, AfterValidator(lower_type_names)]


class Blob(ProtoModel):
    mime_type: str | None = None
    data: str | None = None  # base64
    display_name: str | None = None  # a label; no effect


class FileData(ProtoModel):
    mime_type: str | None = None
    file_uri: str | None = None
    display_name: str | None = None  # a label; no effect


class FunctionCall(ProtoModel):
    id: str | None = None
    name: str | None = None
    args: dict[str, Any] | None = None


class VideoMetadata(ProtoModel):
    start_offset: str | None = None
    end_offset: str | None = None
    fps: Double | None = None
    content_layers: list[VideoContentLayer] | None = None


class PartMediaResolution(ProtoModel):
    level: MediaResolution | None = None
    num_tokens: Int32 | None = None


class DocumentMetadata(ProtoModel):
    start_page: Int32 | None = None
    end_page: Int32 | None = None
    content_layers: list[DocumentContentLayer] | None = None


class SpreadsheetMetadata(ProtoModel):
    visible_cells: str | None = None
    sheet_index: Int32 | None = None
    content_layers: list[SpreadsheetContentLayer] | None = None


class AudioMetadata(ProtoModel):
    start_offset: str | None = None
    end_offset: str | None = None


class SpeechMetadata(ProtoModel):
    speaker: str | None = None
    style: str | None = None


class WordInfo(ProtoModel):
    word: str | None = None
    start_offset: str | None = None
    end_offset: str | None = None


class Transcription(ProtoModel):
    text: str | None = None
    finished: bool | None = None
    language_code: str | None = None
    speaker_label: str | None = None
    words: list[WordInfo] | None = None
    start_offset: str | None = None
    end_offset: str | None = None


class ServerToolCall(ProtoModel):
    """A built-in tool's call in a Gemini 3 history (includeServerSideToolInvocations)."""

    id: str | None = None
    tool_type: ToolType | None = None
    args: dict[str, Any] | None = None


class ServerToolResponse(ProtoModel):
    id: str | None = None
    tool_type: ToolType | None = None
    response: dict[str, Any] | None = None


class FunctionResponsePart(ProtoModel):
    inline_data: Blob | None = None
    file_data: FileData | None = None
    media_processing: MediaProcessing | None = None
    media_resolution: PartMediaResolution | None = None
    video_metadata: VideoMetadata | None = None
    document_metadata: DocumentMetadata | None = None
    spreadsheet_metadata: SpreadsheetMetadata | None = None
    audio_metadata: AudioMetadata | None = None


class FunctionResponse(ProtoModel):
    id: str | None = None
    name: str | None = None
    response: dict[str, Any] | None = None
    parts: list[FunctionResponsePart] | None = None
    will_continue: bool | None = None
    scheduling: Scheduling | None = None


class ExecutableCode(ProtoModel):
    language: Language | None = None
    code: str | None = None
    id: str | None = None


class CodeExecutionResult(ProtoModel):
    outcome: Outcome | None = None
    output: str | None = None
    id: str | None = None


class Part(ProtoModel):
    """The fields are google-genai 3.6.1's `Part` as `_Part_to_mldev` puts it on the wire. Those without an effect
    here (media processing, speech, document and spreadsheet metadata, transcriptions, display names) are accepted
    and ignored, with a note in the log (`GenerateService`)."""

    # oneof data
    text: str | None = None
    inline_data: Blob | None = None
    file_data: FileData | None = None
    function_call: FunctionCall | None = None
    function_response: FunctionResponse | None = None
    executable_code: ExecutableCode | None = None
    code_execution_result: CodeExecutionResult | None = None
    tool_call: ServerToolCall | None = None
    tool_response: ServerToolResponse | None = None
    # metadata
    thought: bool | None = None
    thought_signature: str | None = None
    video_metadata: VideoMetadata | None = None
    audio_metadata: AudioMetadata | None = None
    document_metadata: DocumentMetadata | None = None
    spreadsheet_metadata: SpreadsheetMetadata | None = None
    media_resolution: PartMediaResolution | None = None
    media_processing: MediaProcessing | None = None
    speech_metadata: SpeechMetadata | None = None
    audio_transcription: Transcription | None = None
    part_metadata: dict[str, Any] | None = None

    DATA_FIELDS: ClassVar[tuple[str, ...]] = ("text", "inline_data", "file_data", "function_call", "function_response",
                                              "executable_code", "code_execution_result", "tool_call",
                                              "tool_response")

    def data_fields(self) -> list[str]:
        return [f for f in self.DATA_FIELDS if getattr(self, f) is not None]


class Content(ProtoModel):
    role: str | None = None
    parts: list[Part] | None = None


# Schemas and tools --------------------------------------------------------------------------------------------------
class Schema(ProtoModel):
    """Gemini's OpenAPI-3.0 subset. `properties` keys are user names and stay as sent."""

    type: SchemaType | None = None
    format: str | None = None
    title: str | None = None
    description: str | None = None
    nullable: bool | None = None
    enum: list[str] | None = None
    items: Schema | None = None
    max_items: Int64 | None = None
    min_items: Int64 | None = None
    properties: dict[str, Schema] | None = None
    required: list[str] | None = None
    min_properties: Int64 | None = None
    max_properties: Int64 | None = None
    minimum: Double | None = None
    maximum: Double | None = None
    min_length: Int64 | None = None
    max_length: Int64 | None = None
    pattern: str | None = None
    example: Any = None
    any_of: list[Schema] | None = None
    property_ordering: list[str] | None = None
    default: Any = None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class FunctionDeclaration(ProtoModel):
    name: str | None = None
    description: str | None = None
    parameters: Schema | None = None
    parameters_json_schema: JsonSchema = None
    response: Schema | None = None
    response_json_schema: JsonSchema = None
    behavior: Behavior | None = None


# Built-in tools are accepted on the wire (and checked like any message); no engine runs them yet.
class Empty(ProtoModel):
    pass


class Interval(ProtoModel):
    start_time: str | None = None
    end_time: str | None = None


class GoogleSearch(ProtoModel):
    time_range_filter: Interval | None = None
    exclude_domains: list[str] | None = None
    search_types: dict[str, Any] | None = None


class DynamicRetrievalConfig(ProtoModel):
    mode: str | None = None
    dynamic_threshold: Float | None = None


class GoogleSearchRetrieval(ProtoModel):
    dynamic_retrieval_config: DynamicRetrievalConfig | None = None


class FileSearch(ProtoModel):
    file_search_store_names: list[str] | None = None
    metadata_filter: str | None = None
    top_k: Int32 | None = None


class GoogleMaps(ProtoModel):
    enable_widget: bool | None = None
    auth_config: dict[str, Any] | None = None


class ComputerUse(ProtoModel):
    environment: str | None = None
    excluded_predefined_functions: list[str] | None = None
    enable_prompt_injection_detection: bool | None = None
    disabled_safety_policies: list[str] | None = None


class Tool(ProtoModel):
    function_declarations: list[FunctionDeclaration] | None = None
    google_search_retrieval: GoogleSearchRetrieval | None = None
    code_execution: Empty | None = None
    google_search: GoogleSearch | None = None
    computer_use: ComputerUse | None = None
    url_context: Empty | None = None
    file_search: FileSearch | None = None
    google_maps: GoogleMaps | None = None
    mcp_servers: list[dict[str, Any]] | None = None


class FunctionCallingConfig(ProtoModel):
    mode: FunctionCallingMode | None = None
    allowed_function_names: list[str] | None = None
    stream_function_call_arguments: bool | None = None


class LatLng(ProtoModel):
    latitude: Double | None = None
    longitude: Double | None = None


class RetrievalConfig(ProtoModel):
    lat_lng: LatLng | None = None
    language_code: str | None = None


class ToolConfig(ProtoModel):
    function_calling_config: FunctionCallingConfig | None = None
    retrieval_config: RetrievalConfig | None = None
    include_server_side_tool_invocations: bool | None = None


class SafetySetting(ProtoModel):
    category: HarmCategory | None = None
    threshold: HarmBlockThreshold | None = None
    method: str | None = None


class ThinkingConfig(ProtoModel):
    include_thoughts: bool | None = None
    thinking_budget: Int32 | None = None
    thinking_level: ThinkingLevel | None = None


class PrebuiltVoiceConfig(ProtoModel):
    voice_name: str | None = None


class VoiceConfig(ProtoModel):
    prebuilt_voice_config: PrebuiltVoiceConfig | None = None
    replicated_voice_config: dict[str, Any] | None = None
    voice: str | None = None


class SpeakerVoiceConfig(ProtoModel):
    speaker: str | None = None
    voice_config: VoiceConfig | None = None


class MultiSpeakerVoiceConfig(ProtoModel):
    speaker_voice_configs: list[SpeakerVoiceConfig] | None = None


class SpeechConfig(ProtoModel):
    voice_config: VoiceConfig | None = None
    multi_speaker_voice_config: MultiSpeakerVoiceConfig | None = None
    language_code: str | None = None


class ImageConfig(ProtoModel):
    aspect_ratio: str | None = None
    image_size: str | None = None


class GenerationConfig(ProtoModel):
    stop_sequences: list[str] | None = None
    response_mime_type: str | None = None
    response_schema: Schema | None = None
    response_json_schema: JsonSchema = None
    response_modalities: list[Modality] | None = None
    candidate_count: Int32 | None = None
    max_output_tokens: Int32 | None = None
    temperature: Float | None = None
    top_p: Float | None = None
    top_k: Int32 | None = None
    seed: Int32 | None = None
    presence_penalty: Float | None = None
    frequency_penalty: Float | None = None
    response_logprobs: bool | None = None
    logprobs: Int32 | None = None
    enable_enhanced_civic_answers: bool | None = None
    speech_config: SpeechConfig | None = None
    thinking_config: ThinkingConfig | None = None
    image_config: ImageConfig | None = None
    media_resolution: MediaResolution | None = None
    audio_timestamp: bool | None = None
    audio_transcription_config: dict[str, Any] | None = None
    enable_affective_dialog: bool | None = None


# Requests -----------------------------------------------------------------------------------------------------------
class GenerateContentRequest(ProtoModel):
    model: str | None = None
    contents: list[Content] | None = None
    system_instruction: Content | None = None
    tools: list[Tool] | None = None
    tool_config: ToolConfig | None = None
    safety_settings: list[SafetySetting] | None = None
    generation_config: GenerationConfig | None = None
    cached_content: str | None = None
    labels: dict[str, str] | None = None
    service_tier: str | None = None
    store: bool | None = None
    continuation_token: str | None = None  # base64; Pollux never stops with CONTINUATION, so none is valid


class CountTokensRequest(ProtoModel):
    contents: list[Content] | None = None
    generate_content_request: GenerateContentRequest | None = None


# Responses ----------------------------------------------------------------------------------------------------------
def details_json(counts: TokenCount) -> list[dict[str, Any]]:
    return [{"modality": m, "tokenCount": n} for m, n in (counts.by_modality or {"TEXT": 0}).items()]


def part_json(part: OutPart) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if part.call is not None:
        out["functionCall"] = {"id": part.call.id, "name": part.call.name, "args": part.call.args}
    elif part.data is not None:
        out["inlineData"] = {"mimeType": part.mime_type, "data": base64.b64encode(part.data).decode()}
    elif part.text is not None:
        out["text"] = part.text
        if part.thought:
            out["thought"] = True
    if part.signature:
        out["thoughtSignature"] = part.signature
    return out


def candidate_json(chunk: Chunk) -> dict[str, Any]:
    cand = chunk.candidate
    parts = [part_json(p) for p in chunk.parts]
    out: dict[str, Any] = {"content": {"parts": parts, "role": "model"} if parts else {"role": "model"}}
    if cand.finish:
        out["finishReason"] = cand.finish
    if chunk.logprobs:
        total = sum(lp.logprob for lp in chunk.logprobs)
        out["avgLogprobs"] = total / len(chunk.logprobs)
        out["logprobsResult"] = {
            "topCandidates": [{"candidates": [{"token": t, "tokenId": i, "logProbability": p} for t, i, p in lp.top]}
                              for lp in chunk.logprobs],
            "chosenCandidates": [{"token": lp.token, "tokenId": lp.token_id, "logProbability": lp.logprob}
                                 for lp in chunk.logprobs],
            "logProbabilitySum": total,
        }
    out["index"] = cand.index
    return out


def usage_json(usage: Usage) -> dict[str, Any]:
    """Zero counts are left out, as proto3 JSON does."""
    out: dict[str, Any] = {"promptTokenCount": usage.prompt.total}
    if usage.cached:
        out["cachedContentTokenCount"] = usage.cached
    if usage.output:
        out["candidatesTokenCount"] = usage.output
    out["totalTokenCount"] = usage.total
    if usage.thoughts:
        out["thoughtsTokenCount"] = usage.thoughts
    out["promptTokensDetails"] = details_json(usage.prompt)
    if usage.cached_by_modality:
        out["cacheTokensDetails"] = details_json(TokenCount(usage.cached_by_modality))
    if usage.output_by_modality:
        out["candidatesTokensDetails"] = [{"modality": m, "tokenCount": n} for m, n in usage.output_by_modality.items()]
    return out


def reply_json(reply: Reply) -> dict[str, Any]:
    return {"candidates": [candidate_json(c) for c in reply.chunks], "usageMetadata": usage_json(reply.usage),
            "modelVersion": reply.model_version, "responseId": reply.response_id}


def count_tokens_json(count: TokenCount, cached: TokenCount | None = None) -> dict[str, Any]:
    """`cached`: the tokens of the prompt that a context cache holds."""
    out: dict[str, Any] = {"totalTokens": count.total}
    if cached is not None and cached.total:
        out["cachedContentTokenCount"] = cached.total
    if count.by_modality:
        out["promptTokensDetails"] = details_json(count)
    if cached is not None and cached.total:
        out["cacheTokensDetails"] = details_json(cached)
    return out
