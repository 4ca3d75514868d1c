"""The per-sequence decoding state of the transformers engine, on fake logits (no model)."""

from __future__ import annotations

import pytest
import torch

from pollux.engines.base import CallEvent, Finish, TextDelta
from pollux.engines.decoding import (HERMES, LLAMA3, MISTRAL, GrammarError, Sequence, SequenceParams, SpecialTokens,
                                     ToolFormat, constrained_thinking_budget)

# A toy vocabulary: ids 0-9 are the strings below; 10 = EOS, 11 = <think>, 12 = </think>, 13/14 = tool markers.
VOCAB = ["a", "b", " c", "é"[:1], "\n", "{", "}", "x", "yz", "q", "<eos>", "<think>", "</think>", "<tc>", "</tc>"]
SPECIAL = SpecialTokens(eos=frozenset({10}), think_open=11, think_close=12, tools=ToolFormat(HERMES, 13, 14))


def decode(ids: list[int]) -> str:
    return "".join(VOCAB[i] for i in ids)


def run(params: SequenceParams, logits_for, steps: int = 20) -> list:
    events: list = []
    seq = Sequence(params, SPECIAL, decode, events.append)
    for step in range(steps):
        if seq.done:
            break
        seq.accept(seq.choose(logits_for(step)))
    return events


def peaked(token: int) -> torch.Tensor:
    logits = torch.zeros(len(VOCAB))
    logits[token] = 10.0
    return logits


def text(events) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta) and not e.thought)


def test_greedy_follows_the_logits_and_stops_at_eos():
    script = [0, 1, 2, 10]
    events = run(SequenceParams(temperature=0), lambda i: peaked(script[i]))
    assert text(events) == "ab c" and events[-1] == Finish("STOP")
    assert sum(e.tokens for e in events if isinstance(e, TextDelta)) == 3


def test_max_tokens_and_stop_sequences():
    events = run(SequenceParams(temperature=0, max_new_tokens=2), lambda i: peaked(0))
    assert text(events) == "aa" and events[-1] == Finish("MAX_TOKENS")
    script = [0, 1, 2, 0, 1]
    events = run(SequenceParams(temperature=0, stop_sequences=["b c"]), lambda i: peaked(script[i]))
    assert text(events) == "a" and events[-1] == Finish("STOP")


def test_presence_penalty_turns_away_from_repeats():
    flat = torch.zeros(len(VOCAB))
    flat[0], flat[1] = 1.0, 0.9
    events = run(SequenceParams(temperature=0, presence_penalty=0.5, max_new_tokens=2), lambda i: flat.clone())
    assert text(events) == "ab"


def test_same_seed_same_samples():
    logits = torch.randn(len(VOCAB), generator=torch.Generator().manual_seed(1))
    logits[10] = -100
    first = text(run(SequenceParams(seed=3, max_new_tokens=8), lambda i: logits.clone()))
    again = text(run(SequenceParams(seed=3, max_new_tokens=8), lambda i: logits.clone()))
    assert first == again


def test_thinking_budget_forces_the_end_of_thoughts():
    events = run(SequenceParams(temperature=0, thinking_budget=3, max_new_tokens=8),
                 lambda i: peaked(11) if i == 0 else peaked(7))
    thoughts = [e for e in events if isinstance(e, TextDelta) and e.thought]
    assert len(thoughts) == 4  # <think>, two thought tokens, the forced </think>
    assert text(events).startswith("x")


def test_thinking_off_keeps_think_out():
    events = run(SequenceParams(temperature=0, thinking_budget=0, max_new_tokens=2), lambda i: peaked(11))
    assert not any(isinstance(e, TextDelta) and e.thought for e in events)


def test_tool_call_markers_become_calls():
    body = [5, 6]  # "{}" is not a call
    events = run(SequenceParams(temperature=0, tools=True), lambda i: peaked(([13] + body + [14])[i]))
    assert events[-1] == Finish("MALFORMED_FUNCTION_CALL")
    vocab_call = '{"name": "f", "arguments": {"k": 1}}'
    calls = []
    seq = Sequence(SequenceParams(tools=True, tool_names=frozenset({"f"})), SPECIAL,
                   lambda ids: vocab_call if ids and ids[0] == 7 else decode(ids), calls.append)
    for token in (13, 7, 14, 10):
        seq.accept(token)
    call = next(e for e in calls if isinstance(e, CallEvent)).call
    assert call.name == "f" and call.args == {"k": 1} and calls[-1] == Finish("STOP")


def test_mistral_calls_run_to_the_end_of_the_turn():
    special = SpecialTokens(eos=frozenset({10}), tools=ToolFormat(MISTRAL, 13, None, many=True))
    body = '[{"name": "f", "arguments": {"k": 1}}, {"name": "f", "arguments": {"k": 2}}]'
    events: list = []
    seq = Sequence(SequenceParams(tools=True, tool_names=frozenset({"f"})), special,
                   lambda ids: body if ids == [7] else decode(ids), events.append)
    for token in (13, 7, 10):
        seq.accept(token)
    calls = [e.call for e in events if isinstance(e, CallEvent)]
    assert [c.args for c in calls] == [{"k": 1}, {"k": 2}] and events[-1] == Finish("STOP")
    assert sum(e.tokens for e in events if isinstance(e, CallEvent)) == 2  # the body and the [TOOL_CALLS] marker


def test_llama3_call_is_an_answer_that_is_a_call_object():
    special = SpecialTokens(eos=frozenset({10}), tools=ToolFormat(LLAMA3, None, None, args_key="parameters"))
    call = '{"name": "f", "parameters": {"k": 1}}'

    def run_tokens(tokens):
        events: list = []
        seq = Sequence(SequenceParams(tools=True, tool_names=frozenset({"f"})), special,
                       lambda ids: call if ids == [5, 7] else decode(ids), events.append)
        for token in tokens:
            seq.accept(token)
        return events

    events = run_tokens((5, 7, 10))
    assert [e.call.args for e in events if isinstance(e, CallEvent)] == [{"k": 1}] and events[-1] == Finish("STOP")
    assert text(events) == ""
    other = run_tokens((5, 6, 10))  # "{}" is JSON, not a call: it is the answer
    assert text(other) == "{}" and not any(isinstance(e, CallEvent) for e in other)
    assert text(run_tokens((0, 5, 6, 10))) == "a{}"  # "{" later in an answer is only text


def test_a_tiny_temperature_is_greedy_not_nan():
    """logits / 1e-40 is inf for every non-negative logit, and softmax(inf - inf) is NaN."""
    logits = torch.zeros(len(VOCAB))
    logits[0], logits[1] = 5.0, 4.0
    events = run(SequenceParams(temperature=1e-40, max_new_tokens=3, logprobs=2), lambda i: logits.clone())
    assert text(events) == "aaa" and events[-1] == Finish("MAX_TOKENS")
    chosen = [lp for e in events if isinstance(e, TextDelta) for lp in e.logprobs]
    assert len(chosen) == 3 and all(lp.logprob == 0.0 and lp.top == (("a", 0, 0.0),) for lp in chosen)


def test_no_allowed_token_raises_for_the_batch_loop_to_contain():
    seq = Sequence(SequenceParams(temperature=0), SPECIAL, decode, [].append)
    with pytest.raises(GrammarError):
        seq.choose(torch.full((len(VOCAB),), float("-inf")))
    with pytest.raises(GrammarError):
        seq.choose(torch.full((len(VOCAB),), float("nan")))
    one_nan = torch.zeros(len(VOCAB))
    one_nan[1] = float("nan")  # argmax takes a NaN as the largest: never a token chosen from it
    with pytest.raises(GrammarError):
        seq.choose(one_nan)
    sampled = Sequence(SequenceParams(temperature=1.0), SPECIAL, decode, [].append)
    with pytest.raises(GrammarError):
        sampled.choose(torch.full((len(VOCAB),), float("-inf")))


def best_of(logits: torch.Tensor) -> tuple[int, float]:
    """What the shared batch hands each row: its argmax and maximum, taken for all rows in one op."""
    value, index = logits.max(dim=-1)
    return int(index), float(value)


def test_the_batchs_argmax_is_taken_only_where_nothing_changes_the_row():
    """Greedy with no mask: the batch's argmax as it is (and no token from a row of -inf or NaN). A thinking budget of
    0 masks <think>, and log probabilities need the row: there the row decides, whatever the batch's argmax says."""
    plain = Sequence(SequenceParams(temperature=0), SPECIAL, decode, [].append)
    assert plain.choose(peaked(7), best_of(peaked(7))) == 7
    assert plain.choose(peaked(7), (3, 10.0)) == 3  # taken as given: the caller's argmax of this very row
    for bad in (torch.full((len(VOCAB),), float("-inf")), torch.full((len(VOCAB),), float("nan"))):
        with pytest.raises(GrammarError):
            plain.choose(bad, best_of(bad))
    no_thinking = Sequence(SequenceParams(temperature=0, thinking_budget=0), SPECIAL, decode, [].append)
    thinks = peaked(11)
    thinks[2] = 5.0
    assert no_thinking.choose(thinks, best_of(thinks)) == 2
    with_logprobs = Sequence(SequenceParams(temperature=0, logprobs=1), SPECIAL, decode, [].append)
    assert with_logprobs.choose(peaked(7), (3, 10.0)) == 7


def test_fail_ends_the_sequence_with_its_error_once():
    events: list = []
    seq = Sequence(SequenceParams(temperature=0), SPECIAL, decode, events.append)
    seq.accept(seq.choose(peaked(0)))
    error = RuntimeError("boom")
    seq.fail(error)
    seq.fail(RuntimeError("again"))
    seq.accept(1)
    assert seq.done and events[-1] is error and sum(e is error for e in events) == 1
    assert not any(isinstance(e, Finish) for e in events)


def test_a_newline_between_calls_is_no_text():
    """Qwen's template writes a newline between calls (and forced calls follow it): it is no text part."""
    body = '{"name": "f", "arguments": {}}'
    events: list = []
    seq = Sequence(SequenceParams(tools=True, tool_names=frozenset({"f"})), SPECIAL,
                   lambda ids: body if ids == [7] else decode(ids), events.append)
    for token in (13, 7, 14, 4, 13, 7, 14, 10):
        seq.accept(token)
    assert [e.call.name for e in events if isinstance(e, CallEvent)] == ["f", "f"]
    assert text(events) == "" and events[-1] == Finish("STOP")
    # Each token counts once: two calls of three, and the newline.
    assert sum(e.tokens for e in events if isinstance(e, (CallEvent, TextDelta))) == 7


def test_the_tokens_of_a_call_cut_by_the_limit_are_counted():
    events = run(SequenceParams(temperature=0, tools=True, max_new_tokens=4), lambda i: peaked([13, 5, 7, 7][i]))
    assert events[-1] == Finish("MAX_TOKENS") and not any(isinstance(e, CallEvent) for e in events)
    assert sum(e.tokens for e in events if isinstance(e, TextDelta)) == 4


def test_integers_past_doubles_precision_become_doubles():
    """Call arguments are a protobuf Struct in Gemini: an integer too big for it was a 500 when written out."""
    body = '{"name": "f", "arguments": {"small": 7, "big": 123456789012345678901234567890}}'
    events: list = []
    seq = Sequence(SequenceParams(tools=True), SPECIAL, lambda ids: body if ids == [7] else decode(ids),
                   events.append)
    for token in (13, 7, 14, 10):
        seq.accept(token)
    args = next(e for e in events if isinstance(e, CallEvent)).call.args
    assert args == {"small": 7, "big": 1.2345678901234568e29} and isinstance(args["small"], int)


def test_dynamic_thinking_leaves_the_answer_its_room():
    assert constrained_thinking_budget(400, 30) == 200  # half the limit
    assert constrained_thinking_budget(40, 22) == 17  # the rest, less </think>, is what the shortest answer needs
    assert constrained_thinking_budget(20, 25) == 0 and constrained_thinking_budget(400, None) == 0


class FakeGrammar:
    """A grammar of `length` tokens (any tokens), whose closing way (when it has one) ends in `shortcut` more."""

    def __init__(self, length: int, shortcut: int | None = None) -> None:
        self.length, self.shortcut, self.seen, self.probes, self.closing = length, shortcut, 0, [], 0
        self.estimate, self.probe_at = None, 0

    def mask(self, logits):
        pass

    def advance(self, token):
        self.seen += 1

    @property
    def finished(self):
        return self.seen >= self.length

    @property
    def accepting(self):
        return self.finished

    def tokens_to_close(self, limit):
        self.probes.append(limit)
        need = self.shortcut if self.shortcut is not None else self.length - self.seen
        return need if need <= limit else None

    def closing_choice(self, logits):
        self.closing += 1
        if self.shortcut is not None:
            self.length = min(self.length, self.seen + self.shortcut)
        return 6


def test_a_grammar_short_of_room_heads_for_its_end():
    """A grammar that would run past the limit closes instead; it is measured seldom while the end is far."""
    grammar = FakeGrammar(length=1000, shortcut=2)
    events: list = []
    seq = Sequence(SequenceParams(temperature=0, max_new_tokens=100), SPECIAL, decode, events.append, grammar)
    while not seq.done:
        seq.accept(seq.choose(peaked(0)))
    assert events[-1] == Finish("STOP") and seq.generated <= 100
    assert grammar.closing >= 1 and len(grammar.probes) < 10


def test_a_whole_answer_at_the_limit_is_a_stop():
    """The last token the limit allows completes the grammar: the answer is whole, not cut."""
    grammar = FakeGrammar(length=3)
    events: list = []
    seq = Sequence(SequenceParams(temperature=0, max_new_tokens=3), SPECIAL, decode, events.append, grammar)
    while not seq.done:
        seq.accept(seq.choose(peaked(0)))
    assert events[-1] == Finish("STOP") and seq.generated == 3


def test_an_integer_of_thousands_of_digits_is_no_failure():
    body = '{"name": "f", "arguments": {"n": ' + "9" * 5000 + "}}"
    events: list = []
    seq = Sequence(SequenceParams(tools=True), SPECIAL, lambda ids: body if ids == [7] else decode(ids), events.append)
    for token in (13, 7, 14, 10):
        seq.accept(token)
    assert next(e for e in events if isinstance(e, CallEvent)).call.args == {"n": float("inf")}
