"""Gemini's checks on a GenerateContentRequest: ranges, combinations, roles, tools. Messages follow the real API's.

The real API reports semantic errors as `* <Message>.<field path>: <what is wrong>\n`; range errors as
"Unable to submit request because it has a <field> value of <v> but the supported range is from ...", naming the
field by its JSON name (`maxOutputTokens`). Types and int32/float limits are the parser's (`wire.Int32`, `wire.Float`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..config import ModelSpec
from ..errors import ApiError
from ..images.sizes import output_image
from ..schemas import size_problem
from ..wire import number_text
from .protocol import Content, GenerateContentRequest, GenerationConfig, Schema, ThinkingConfig, Tool, ToolConfig

ROLES = ("user", "model")
MAX_CANDIDATES = 8
MAX_STOP_SEQUENCES = 5
MAX_LOGPROBS = 20
PENALTY_RANGE = (-2.0, 2.0)  # Vertex AI: minimum -2.0, maximum "up to, but not including, 2.0"
TEMPERATURE_SLACK = 0.0001  # the real API: "supported range is from 0 (inclusive) to 2.0001 (exclusive)"
RESPONSE_MIME_TYPES = ("text/plain", "application/json", "application/xml", "application/yaml", "text/x.enum")
_FUNCTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:\-]{0,63}")


def _field(path: str, message: str, request: str = "GenerateContentRequest") -> ApiError:
    return ApiError.invalid(f"* {request}.{path}: {message}\n")


def check_range(name: str, value: float | None, low: float, high: float, high_inclusive: bool = True) -> None:
    """Refuse a value outside [low, high] (or [low, high)). NaN is outside every range, and so are the infinities."""
    if value is None or (low <= value <= high if high_inclusive else low <= value < high):
        return
    upper = f"{number_text(high)} ({'inclusive' if high_inclusive else 'exclusive'})"
    raise ApiError.invalid(f"Unable to submit request because it has a {name} value of {number_text(value)} but the "
                           f"supported range is from {number_text(low)} (inclusive) to {upper}. Update the value "
                           "and try again.")


def check_contents(contents: list[Content] | None, request: str = "GenerateContentRequest") -> None:
    if not contents:
        raise _field("contents", "contents is not specified", request)
    for i, content in enumerate(contents):
        if content.role is not None and content.role not in ROLES:
            raise ApiError.invalid("Please use a valid role: user, model.")
        if not content.parts:
            raise _field(f"contents[{i}].parts", "contents.parts must not be empty.", request)
        for j, part in enumerate(content.parts):
            fields = part.data_fields()
            # A part that is only a thought mark or a signature (a client's record of hidden thoughts) is history
            # Gemini takes; any other part needs its data.
            if not fields and part.thought_signature is None and not part.thought:
                raise _field(f"contents[{i}].parts[{j}].data",
                             "required oneof field 'data' must have one initialized field", request)
            if len(fields) > 1:
                raise _field(f"contents[{i}].parts[{j}].data",
                             f"oneof field 'data' is already set. Cannot set '{fields[1]}'", request)


def check_system_instruction(system: Content | None) -> None:
    if system is None:
        return
    for j, part in enumerate(system.parts or []):
        if part.data_fields() not in ([], ["text"]):
            raise _field(f"system_instruction.parts[{j}]", "system_instruction only supports text parts")


# The sampling fields' JSON names, as range errors name them.
SAMPLING_NAMES = {"temperature": "temperature", "top_p": "topP", "candidate_count": "candidateCount",
                  "max_output_tokens": "maxOutputTokens", "presence_penalty": "presencePenalty",
                  "frequency_penalty": "frequencyPenalty", "logprobs": "logprobs"}


def check_sampling(cfg: GenerationConfig, model: ModelSpec, names: Mapping[str, str] = SAMPLING_NAMES) -> None:
    """The numeric ranges of the sampling fields; `names` says what to call each field (the OpenAI surface has its
    own). These values reach the sampler, where a NaN or an infinity would fail the whole decode batch."""
    check_range(names["temperature"], cfg.temperature, 0, (model.max_temperature or 2.0) + TEMPERATURE_SLACK,
                high_inclusive=False)
    check_range(names["top_p"], cfg.top_p, 0, 1)
    check_range(names["candidate_count"], cfg.candidate_count, 1, MAX_CANDIDATES)
    check_range(names["max_output_tokens"], cfg.max_output_tokens, 1, model.output_token_limit + 1,
                high_inclusive=False)
    check_range(names["presence_penalty"], cfg.presence_penalty, *PENALTY_RANGE, high_inclusive=False)
    check_range(names["frequency_penalty"], cfg.frequency_penalty, *PENALTY_RANGE, high_inclusive=False)
    check_range(names["logprobs"], cfg.logprobs, 0, MAX_LOGPROBS)


def response_modalities(cfg: GenerationConfig, model: ModelSpec) -> tuple[str, ...]:
    """What the answer holds: the request's responseModalities, else all the model answers with (Gemini's image
    models answer with text and a picture unless asked otherwise; the others with text)."""
    asked = [m for m in cfg.response_modalities or [] if m != "MODALITY_UNSPECIFIED"]
    return tuple(dict.fromkeys(asked)) or model.output_modalities


def check_generation_config(cfg: GenerationConfig, model: ModelSpec) -> None:
    if cfg.logprobs is not None and not cfg.response_logprobs:
        raise _field("generation_config.logprobs", "logprobs is only valid when response_logprobs is true")
    check_sampling(cfg, model)
    if cfg.response_logprobs and cfg.logprobs == 0:
        # Asked for, the top alternatives are 1 to 20 a token; 0 is refused with these words (python-genai's own
        # suite records them for gemini-2.5-flash).
        raise ApiError.invalid(f"Logprobs is not enabled for {model.name}")
    if cfg.top_k is not None and cfg.top_k < 1:
        raise _field("generation_config.top_k", f"top_k must be positive, got {cfg.top_k}")
    if cfg.stop_sequences is not None and len(cfg.stop_sequences) > MAX_STOP_SEQUENCES:
        raise _field("generation_config.stop_sequences",
                     f"stop_sequences must have at most {MAX_STOP_SEQUENCES} items, got {len(cfg.stop_sequences)}")
    _check_response_format(cfg)
    for modality in cfg.response_modalities or []:
        if modality not in model.output_modalities and modality != "MODALITY_UNSPECIFIED":
            raise ApiError.invalid(f"Model does not support the requested response modalities: {modality.lower()}")
    _check_image_output(cfg, model)
    if cfg.thinking_config is not None:
        check_thinking(cfg.thinking_config, model)


def _check_image_output(cfg: GenerationConfig, model: ModelSpec) -> None:
    if cfg.image_config is not None:
        if "IMAGE" not in model.output_modalities:
            # The field's documentation: "An error will be returned if this field is set for models that don't
            # support these config options."
            raise _field("generation_config.image_config", f"image_config is not supported for {model.name}: it "
                         "does not answer with images.")
        output_image(model, cfg.image_config.aspect_ratio, cfg.image_config.image_size)  # a 400 for bad values
    if "IMAGE" in response_modalities(cfg, model) and (cfg.candidate_count or 1) > 1:
        raise ApiError.invalid(f"Multiple candidates is not enabled for {model.name}")


def _check_response_format(cfg: GenerationConfig) -> None:
    mime = cfg.response_mime_type
    if mime is not None and mime not in RESPONSE_MIME_TYPES:
        raise _field("generation_config.response_mime_type",
                     "allowed mimetypes are `text/plain`, `application/json`, `application/xml`, `application/yaml` "
                     "and `text/x.enum`.")
    if cfg.response_schema is not None and cfg.response_json_schema is not None:
        raise _field("generation_config.response_schema",
                     "response_schema and response_json_schema cannot both be set. Use only one of them.")
    has_schema = cfg.response_schema is not None or cfg.response_json_schema is not None
    if has_schema and mime not in ("application/json", "text/x.enum"):
        which = "response_schema" if cfg.response_schema is not None else "response_json_schema"
        raise _field(f"generation_config.{which}",
                     f"specifying {which} requires setting response_mime_type to 'application/json' or 'text/x.enum'.")
    if mime == "text/x.enum":
        schema = cfg.response_schema.to_dict() if cfg.response_schema else cfg.response_json_schema
        values = schema.get("enum") if isinstance(schema, dict) else None
        if not values or not all(isinstance(v, str) for v in values):
            raise _field("generation_config.response_schema",
                         "response_mime_type 'text/x.enum' requires a schema with an enum of strings.")
    if cfg.response_json_schema is not None and not isinstance(cfg.response_json_schema, (dict, bool)):
        raise _field("generation_config.response_json_schema", "response_json_schema must be a JSON Schema object.")
    for name, schema in (("response_schema", cfg.response_schema), ("response_json_schema", cfg.response_json_schema)):
        _check_size(f"generation_config.{name}", schema.to_dict() if isinstance(schema, Schema) else schema)


def _check_size(path: str, schema: Any) -> None:
    problem = size_problem(schema) if schema is not None else None
    if problem is not None:
        raise _field(path, f"The schema is too large: {problem}.")


def check_thinking(tc: ThinkingConfig, model: ModelSpec) -> None:
    if not model.thinking:
        if tc.include_thoughts or tc.thinking_level or (tc.thinking_budget or 0) > 0:
            raise ApiError.invalid(f"Thinking is not supported by {model.name}.")
        return
    if tc.thinking_budget is not None and tc.thinking_level is not None:
        raise ApiError.invalid("You can only set only one of thinking budget and thinking level.")
    budget = tc.thinking_budget
    if budget is not None and budget != -1:
        low, high = model.thinking_budget_range
        if budget == 0:
            if not model.thinking_can_disable:
                raise ApiError.invalid("Budget 0 is invalid. This model only works in thinking mode.")
        elif not low <= budget <= high:
            raise ApiError.invalid(f"The thinking budget {budget} is invalid. Please choose a value between {low} and {high}.")
    level = tc.thinking_level
    if level is not None and level != "THINKING_LEVEL_UNSPECIFIED":
        # A budget-controlled model (2.5) takes a level too, as the live API does (python-genai's suite sends LOW to
        # gemini-2.5-flash and gets an answer); Gemini 3 models take only their own levels.
        if model.thinking_control == "level" and level not in model.thinking_levels:
            raise ApiError.invalid(f"Thinking level {level} is not supported for this model. "
                                   f"Supported levels: {', '.join(model.thinking_levels)}.")


# The Tool fields other than function_declarations.
BUILT_IN_TOOLS = ("google_search", "google_search_retrieval", "code_execution", "url_context", "file_search",
                  "google_maps", "computer_use", "mcp_servers")


def check_tools(tools: list[Tool] | None, tool_config: ToolConfig | None) -> list[str]:
    """Validate declarations and the calling config; returns the declared function names."""
    names: list[str] = []
    for i, tool in enumerate(tools or []):
        for builtin in BUILT_IN_TOOLS:
            if getattr(tool, builtin) is not None:
                # Refused, not ignored: an app must not take an answer without search (or code runs) for one with.
                raise _field(f"tools[{i}].{builtin}", f"{builtin} is not available on Pollux: built-in tools run on "
                             "Google's services (search, maps, code execution, URL fetching, file search stores, MCP "
                             "servers), which a self-hosted server does not have. Declare a function instead, or script "
                             "the answer with fixtures.")
        for j, fd in enumerate(tool.function_declarations or []):
            path = f"tools[{i}].function_declarations[{j}]"
            if not fd.name or not _FUNCTION_NAME.fullmatch(fd.name):
                raise _field(f"{path}.name", "Invalid function name. Must start with a letter or an underscore. "
                             "Must be a-z, A-Z, 0-9, or contain underscores, dots, colons and dashes, with a maximum "
                             "length of 64.")
            if fd.parameters is not None and fd.parameters_json_schema is not None:
                raise _field(f"{path}.parameters", "parameters and parameters_json_schema cannot both be set.")
            for name in ("parameters_json_schema", "response_json_schema"):
                if not isinstance(getattr(fd, name), (dict, bool, type(None))):
                    raise _field(f"{path}.{name}", f"{name} must be a JSON Schema object.")
            for name in ("parameters", "parameters_json_schema", "response", "response_json_schema"):
                schema = getattr(fd, name)
                _check_size(f"{path}.{name}", schema.to_dict() if isinstance(schema, Schema) else schema)
            if fd.response is not None and fd.response_json_schema is not None:
                raise _field(f"{path}.response", "response and response_json_schema cannot both be set.")
            names.append(fd.name)
    fcc = tool_config.function_calling_config if tool_config else None
    if fcc is not None:
        mode = fcc.mode or "AUTO"
        if fcc.allowed_function_names:
            if mode not in ("ANY", "VALIDATED"):
                raise _field("tool_config.function_calling_config.allowed_function_names",
                             "allowed_function_names should only be set when the mode is ANY or VALIDATED.")
            unknown = [n for n in fcc.allowed_function_names if n not in names]
            if unknown:
                raise _field("tool_config.function_calling_config.allowed_function_names",
                             f"function name(s) {', '.join(unknown)} not found in the function declarations.")
        if mode in ("ANY", "VALIDATED") and not names:
            raise _field("tool_config.function_calling_config.mode",
                         f"function calling mode {mode} requires at least one function declaration.")
    return names


def check_request(req: GenerateContentRequest, model: ModelSpec) -> None:
    check_contents(req.contents)
    check_system_instruction(req.system_instruction)
    if req.generation_config is not None:
        check_generation_config(req.generation_config, model)
    check_tools(req.tools, req.tool_config)
    seen = set()
    for setting in req.safety_settings or []:
        if setting.category in seen:
            raise _field("safety_settings", f"duplicate category {setting.category} in safety_settings.")
        seen.add(setting.category)
    if req.continuation_token:
        # Tokens resume answers that stopped with finishReason CONTINUATION, which no Pollux answer does.
        raise _field("continuation_token", "continuation_token is not valid: no generation stopped with finish "
                     "reason CONTINUATION issued it.")
    if req.cached_content and (req.system_instruction or req.tools or req.tool_config):
        raise ApiError.invalid(
            "CachedContent can not be used with GenerateContent request setting system_instruction, tools or "
            "tool_config.\n\nProposed fix: move those values to CachedContent from GenerateContent request.")
