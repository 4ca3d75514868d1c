"""One sequence's decoding state for in-process models: sampling, grammar, thinking, tool calls, stops, text.

A `Sequence` is driven one token at a time by the batch loop (`hf.py`): `choose` picks the next token from the
model's logits row and `accept` folds it into the output, emitting engine events (one per token, so usage counts
stay exact). Either may raise; the batch loop then ends that sequence alone with `fail`. Nothing here knows about
batches, HTTP or Gemini JSON.

An answer held to a grammar (a response schema, forced or validated calls) gets to end: once the tokens left come
down to what the grammar needs to close, each token heads for the end, and dynamic thinking before such an answer
stops in time for it (`constrained_thinking_budget`).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from .base import CallEvent, Event, Finish, TextDelta, TokenLogprob, ToolCall

if TYPE_CHECKING:
    from .constrain import Matcher


class GrammarError(ValueError):
    """A grammar cannot be compiled, or a token breaks it."""


@dataclass(frozen=True)
class ToolFormat:
    """How a model family writes its tool calls (README, "Function calling formats")."""

    name: str
    open: int | None  # the marker token before calls; None: the answer itself is the call, when it starts with "{"
    close: int | None = None  # the marker after each call; None: the calls run to the end of the turn
    many: bool = False  # the body is a JSON list of calls (else one call object per marker pair)
    args_key: str = "arguments"  # where the arguments are: Llama 3 writes "parameters"
    # The layout the chat template writes calls in: the text between the opening marker and the JSON, between the
    # JSON and the closing marker, and between one call and the next (Qwen: newlines), and its JSON separators.
    before: str = ""
    after: str = ""
    between: str = ""
    separators: tuple[str, str] = (", ", ": ")


_NO_TOKEN = "No token can come next: the grammar allows none, or the logits are not numbers."
CLOSE_PROBE_LIMIT = 512  # the furthest a grammar's end is looked for; further is "not in sight"

HERMES = "hermes"  # Qwen 2.5/3, Hermes and other ChatML models: <tool_call>{"name", "arguments"}</tool_call>
MISTRAL = "mistral"  # Mistral v3+ tokenizers: [TOOL_CALLS][{"name", "arguments"}, ...] to the end of the turn
LLAMA3 = "llama3"  # Llama 3.1-3.3: an answer that is {"name", "parameters"} alone


# Dynamic thinking before an answer held to a grammar (a response schema, a forced call) may spend at most this share of
# maxOutputTokens: the rest is the answer's, which would otherwise be cut, or never start, when the thoughts run long.
THINKING_SHARE = 0.5


def constrained_thinking_budget(max_new_tokens: int, answer_tokens: int | None) -> int:
    """The thinking budget of dynamic thinking before an answer that must follow a grammar: THINKING_SHARE of the
    output limit, and never the room that the shortest valid answer (`answer_tokens`; None: it does not fit at all)
    needs after the token that ends the thoughts."""
    if answer_tokens is None:
        return 0
    return max(0, min(int(max_new_tokens * THINKING_SHARE), max_new_tokens - answer_tokens - 1))


def _struct_int(text: str) -> int | float:
    """A JSON integer as a call's arguments can carry it: Gemini's are a protobuf Struct, whose numbers are doubles,
    so an integer past 2**53 is a double (and one past the doubles is infinite, which the wire writes as null). Long
    digit strings never go through int(), which refuses more than 4300 digits."""
    if len(text.lstrip("-")) <= 16:
        value = int(text)
        if abs(value) < 2**53:
            return value
    return float(text)


@dataclass(frozen=True)
class SpecialTokens:
    """The ids that change the decoding state, as the model's vocabulary has them (None when absent)."""

    eos: frozenset[int]
    think_open: int | None = None
    think_close: int | None = None
    tools: ToolFormat | None = None


@dataclass
class SequenceParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    max_new_tokens: int = 256
    stop_sequences: list[str] = field(default_factory=list)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: int | None = None
    thinking_budget: int | None = None  # None: the model decides; 0: no thinking
    starts_thinking: bool = False        # the prompt itself opened a <think> block
    tools: bool = False                  # tool-call markers become calls
    tool_names: frozenset[str] = frozenset()


class _Detokenizer:
    """Incremental text of a growing id list that never splits a UTF-8 character (the TGI prefix-window method)."""

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self.ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def push(self, token: int) -> str:
        self.ids.append(token)
        before = self._decode(self.ids[self._prefix:self._read])
        after = self._decode(self.ids[self._prefix:])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self.ids)
            return after[len(before):]
        return ""

    def reset(self) -> None:
        self.ids, self._prefix, self._read = [], 0, 0


class Sequence:
    def __init__(self, params: SequenceParams, special: SpecialTokens, decode: Callable[[list[int]], str],
                 emit: Callable[[Event | BaseException], None], answer_matcher: Matcher | None = None,
                 call_matcher: Callable[[], Matcher] | None = None) -> None:
        self.params = params
        self.special = special
        self.decode = decode
        self.emit = emit
        self.answer_matcher = answer_matcher  # applied once the answer starts (after any thinking)
        self.call_matcher = call_matcher  # mode VALIDATED: a fresh grammar for each call the model opens
        self._call: Matcher | None = None
        self.done = False
        self.generated = 0
        self.thought_tokens = 0
        self._phase = "thinking" if params.starts_thinking else "start"  # start | thinking | answer | tool
        self._lstrip = params.starts_thinking
        self._text = _Detokenizer(decode)
        self._answer = ""  # the answer so far, and how much of it was sent
        self._sent = 0
        self._tool_ids: list[int] = []
        self._held = 0  # tokens of a call being written, counted when it is emitted (or when the sequence ends)
        self._closing = False  # out of room: from now on each token heads for the end of the grammar
        self._counts: dict[int, int] = {}
        self._logprob: TokenLogprob | None = None
        self._generator = torch.Generator().manual_seed(params.seed)

    # Choosing ---------------------------------------------------------------------------------------------------
    def choose(self, logits: torch.Tensor, best: tuple[int, float] | None = None) -> int:
        """The next token, from the model's logits for this sequence (a 1-D tensor). `best`: the row's argmax and
        maximum, when the caller has them (the shared batch takes all rows' in one op)."""
        p, s = self.params, self.special
        forced = self._forced()
        if forced is not None:
            self._logprob = None
            return forced
        penalties = bool(self._counts and (p.presence_penalty or p.frequency_penalty))
        answer_mask = self._phase != "thinking" and self.answer_matcher is not None
        call_mask = self._phase == "tool" and self._call is not None
        no_thinking = self._phase == "start" and p.thinking_budget == 0 and s.think_open is not None
        masked = penalties or answer_mask or call_mask or no_thinking
        if best is not None and not masked and p.temperature <= 0 and p.logprobs is None:
            # Greedy, and nothing masks the row (no mask means no grammar either): its argmax as it is.
            token, value = best
            if not value > float("-inf"):  # every logit -inf, or a NaN (which max takes as the largest)
                raise GrammarError(_NO_TOKEN)
            return token
        logits = logits.float()
        if masked:  # the row is the batch's: changed only in a copy
            logits = logits.clone()
        if penalties:
            ids = torch.tensor(list(self._counts), dtype=torch.long)
            counts = torch.tensor(list(self._counts.values()), dtype=logits.dtype)
            logits[ids] -= p.presence_penalty + p.frequency_penalty * counts
        may_think = self._phase == "start" and p.thinking_budget != 0 and s.think_open is not None
        if answer_mask:
            think_logit = logits[s.think_open].clone() if may_think else None
            self.answer_matcher.mask(logits)
            if think_logit is not None:  # thinking may still come before the constrained answer
                logits[s.think_open] = think_logit
        if call_mask:
            self._call.mask(logits)
        if no_thinking:
            logits[s.think_open] = float("-inf")
        if (masked or p.temperature > 0) and not bool((logits > float("-inf")).any()):
            raise GrammarError(_NO_TOKEN)
        grammar = self._grammar()
        if grammar is not None and self._must_close(grammar):
            token = grammar.closing_choice(logits)
            if token is not None:
                self._logprob = self._logprob_of(logits, token) if p.logprobs is not None else None
                return token
        if p.temperature <= 0:
            scaled = logits
            token = int(torch.argmax(logits))
            if not logits[token] > float("-inf"):  # every logit -inf, or a NaN (which argmax takes as the largest)
                raise GrammarError(_NO_TOKEN)
        else:
            # Shifted so the best token is at 0: a tiny temperature then sends the others to -inf, never to inf, whose
            # softmax is NaN.
            scaled = (logits - logits.max()) / p.temperature
            token = self._sample(scaled)
        if p.logprobs is not None:
            self._logprob = self._logprob_of(scaled, token)
        return token

    def _forced(self) -> int | None:
        """The token the engine decides alone: close thinking when the budget is spent."""
        p, s = self.params, self.special
        if self._phase == "thinking" and s.think_close is not None and p.thinking_budget is not None \
                and self.thought_tokens >= p.thinking_budget:
            return s.think_close
        return None

    def _grammar(self) -> Matcher | None:
        """The grammar the next token answers to: the whole answer's, else (mode VALIDATED) the open call's."""
        if self._phase == "thinking":
            return None
        if self.answer_matcher is not None:
            return self.answer_matcher
        return self._call if self._phase == "tool" else None

    def _must_close(self, grammar: Matcher) -> bool:
        """Whether the tokens left are about what the grammar needs to end, so that it must head there now. How far
        the end is gets measured again each time the room left has halved towards the last measure (a token can
        move the end away: a new key, a nested object), and at every step once close."""
        if self._closing:
            return True
        remaining = self.params.max_new_tokens - self.generated
        if grammar.estimate is not None and remaining > grammar.probe_at:
            return False
        need = grammar.tokens_to_close(min(remaining, CLOSE_PROBE_LIMIT))
        if need is None:  # not in sight, or not within the room left: look again when the room has halved
            grammar.estimate, grammar.probe_at = remaining, remaining // 2
            return False
        slack = max(2, need // 4)  # a model may spell what is left in more tokens than the measure
        if need + slack >= remaining:
            self._closing = True
            return True
        grammar.estimate, grammar.probe_at = need, need + slack + (remaining - need - slack) // 2
        return False

    def _sample(self, logits: torch.Tensor) -> int:
        p = self.params
        logits = logits.clone()
        if p.top_k and p.top_k < logits.shape[-1]:
            kth = torch.topk(logits, p.top_k).values[-1]
            logits[logits < kth] = float("-inf")
        probs = torch.softmax(logits, dim=-1)
        if 0 < p.top_p < 1:
            sorted_probs, order = torch.sort(probs, descending=True)
            drop = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= p.top_p
            probs[order[drop]] = 0.0
        return int(torch.multinomial(probs, 1, generator=self._generator))

    def _logprob_of(self, logits: torch.Tensor, token: int) -> TokenLogprob:
        logp = torch.log_softmax(logits, dim=-1)
        k = min(self.params.logprobs or 0, logp.shape[-1])
        top: tuple[tuple[str, int, float], ...] = ()
        if k:
            values, ids = torch.topk(logp, k)
            # A token the grammar or the temperature rules out is no alternative (and -inf is no JSON number).
            top = tuple((self.decode([int(i)]), int(i), float(v)) for v, i in zip(values, ids, strict=True)
                        if v > float("-inf"))
        return TokenLogprob(self.decode([token]), token, float(logp[token]), top)

    # Accepting --------------------------------------------------------------------------------------------------
    def accept(self, token: int) -> None:
        """Fold the chosen token into the output and emit what it adds."""
        if self.done:
            return
        s, p = self.special, self.params
        self.generated += 1
        self._counts[token] = self._counts.get(token, 0) + 1
        logprob, self._logprob = self._logprob, None
        fmt = s.tools
        if token in s.eos:
            return self._end_of_turn()
        if self.answer_matcher is not None and self._phase != "thinking" \
                and not (self._phase == "start" and token == s.think_open):
            self.answer_matcher.advance(token)  # the grammar covers the whole answer, tool-call markers included
        if self._phase == "tool":
            self._held += 1
            if self._call is not None:
                self._call.advance(token)
            if token != fmt.close:
                self._tool_ids.append(token)
            elif not self._emit_calls():
                return self.finish("MALFORMED_FUNCTION_CALL")
            else:
                self._phase, self._call = "answer", None
                self._lstrip = True  # the template's newline between calls, or before text after them, is no text
        elif token == s.think_open and self._phase == "start":
            self._phase = "thinking"
            self._lstrip = True
            self._thought("")
        elif token == s.think_close and self._phase == "thinking":
            self._thought("")
            self._phase = "answer"
            self._text.reset()
            self._lstrip = True
        elif p.tools and fmt is not None and self._phase in ("start", "answer") and self._opens_call(token):
            self._phase, self._tool_ids, self._held = "tool", [] if fmt.open is not None else [token], 1
            self._call = self.call_matcher() if self.call_matcher else None
            if self._call is not None and fmt.open is None:
                try:  # the token was chosen before anyone knew it began a call, so it may not fit the grammar
                    self._call.advance(token)
                except GrammarError:
                    self._call = None  # then it is not a valid call, and will be an answer in JSON

        elif self._phase == "thinking":
            self._thought(self._text.push(token))
        else:
            self._phase = "answer"
            self._answer_delta(self._text.push(token), logprob)
        if not self.done and self._complete():
            return self._end_of_turn()  # nothing but the end can follow: the answer is whole, whatever room is left
        if not self.done and self.generated >= p.max_new_tokens:
            self.finish("MAX_TOKENS")

    def _complete(self) -> bool:
        """The grammar of the answer, or of a validated call that runs to the end of the turn, allows only the end."""
        if self._phase == "thinking":
            return False
        if self.answer_matcher is not None:
            return self.answer_matcher.finished
        return self._phase == "tool" and self._call is not None and self._call.finished

    def _end_of_turn(self) -> None:
        """The turn ends here (an end-of-turn token, or a grammar that allows nothing more)."""
        fmt = self.special.tools
        if self._phase != "tool":
            return self.finish("STOP")
        if fmt is not None and fmt.close is None and self._emit_calls():
            self._phase = "answer"
            return self.finish("STOP")
        if fmt is not None and fmt.open is None:  # JSON that is not a call is an answer like any other
            return self.finish("STOP")
        return self.finish("MALFORMED_FUNCTION_CALL")

    def _opens_call(self, token: int) -> bool:
        fmt = self.special.tools
        assert fmt is not None
        if fmt.open is not None:
            return token == fmt.open
        # Llama 3 style: a call is an answer that starts with "{" (held back until it parses, or turns out to be text).
        return not self._answer and self.decode([token]).lstrip().startswith("{")

    def _strip(self, text: str) -> str:
        """Templates put newlines after <think> and </think>; the parts start at the first visible character."""
        if self._lstrip:
            text = text.lstrip()
            self._lstrip = not text
        return text

    def _thought(self, text: str) -> None:
        self.thought_tokens += 1
        self.emit(TextDelta(self._strip(text), thought=True, tokens=1))

    def _answer_delta(self, text: str, logprob: TokenLogprob | None) -> None:
        """Send the answer's new text, except a tail that may be the start of a stop sequence (it may be cut)."""
        self._answer += self._strip(text)
        stops = [stop for stop in self.params.stop_sequences if stop]
        for stop in stops:
            at = self._answer.find(stop)
            if at != -1:
                self._answer = self._answer[:at]
                self.emit(TextDelta("", tokens=1))
                return self.finish("STOP")
        hold = max((k for stop in stops for k in range(1, len(stop)) if self._answer.endswith(stop[:k])), default=0)
        safe = len(self._answer) - hold
        self.emit(TextDelta(self._answer[self._sent:safe], tokens=1, logprobs=(logprob,) if logprob else ()))
        self._sent = safe

    def _emit_calls(self) -> bool:
        """Parse a finished call body: one call object, or a list of them."""
        fmt = self.special.tools
        assert fmt is not None
        try:
            payload = json.loads(self.decode(self._tool_ids), parse_int=_struct_int)
        except (ValueError, RecursionError):  # not JSON, or nested past what the parser follows
            return False
        calls = payload if isinstance(payload, list) else [payload]
        parsed = []
        for call in calls:
            if not isinstance(call, dict) or not isinstance(call.get("name"), str):
                return False
            args = call.get(fmt.args_key, call.get("arguments", call.get("parameters", {})))
            if isinstance(args, str):
                try:
                    args = json.loads(args, parse_int=_struct_int)
                except (ValueError, RecursionError):
                    return False
            if not isinstance(args, dict) or (self.params.tool_names and call["name"] not in self.params.tool_names):
                return False
            parsed.append(ToolCall(call["name"], args, "call-" + secrets.token_hex(4)))
        for i, call in enumerate(parsed):
            self.emit(CallEvent(call, tokens=self._held if i == 0 else 0))
        self._held = 0
        return True

    def finish(self, reason: str) -> None:
        if self.done:
            return
        if self._phase == "tool" and self.special.tools and self.special.tools.open is None:
            self._answer += self.decode(self._tool_ids)  # held-back JSON that did not become a call
        if len(self._answer) > self._sent or self._held:
            # Text held back for a stop sequence that did not come; the tokens of a call that was never emitted (cut
            # by the limit, or malformed) were generated all the same, and count.
            self.emit(TextDelta(self._answer[self._sent:], tokens=self._held))
            self._sent, self._held = len(self._answer), 0
        self.done = True
        self.emit(Finish(reason))

    def fail(self, error: BaseException) -> None:
        """End here with an error for this sequence's request; the rest of its batch goes on."""
        if self.done:
            return
        self.done = True
        self.emit(error)

    def cancel(self) -> None:
        """Stop at the next step; the client went away, so nothing more is emitted."""
        self.done = True
