"""How the emulator picks function calls, through the official SDKs: every function the prompt names, several calls
in one turn when they are independent, and agent loops (automatic function calling) that go on until every named
function has answered, then end with a text made from the answers."""

from __future__ import annotations

import json
import secrets

import pydantic
import pytest
from google.genai import types
from openai import OpenAI

MODEL = "gemini-2.5-flash"

WEATHER = types.FunctionDeclaration(
    name="get_weather", description="Get the current weather in a city",
    parameters_json_schema={"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"]})
STOCK = types.FunctionDeclaration(
    name="get_stock_price", description="Get the price of a stock",
    parameters_json_schema={"type": "object", "properties": {"symbol": {"type": "string"}}, "required": ["symbol"]})
TIME = types.FunctionDeclaration(
    name="get_time", description="Get the local time in a city",
    parameters_json_schema={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
LOCATION = types.FunctionDeclaration(
    name="get_user_location", description="Where the user is",
    parameters_json_schema={"type": "object", "properties": {}})


def declared(*functions: types.FunctionDeclaration) -> types.GenerateContentConfig:
    """Declarations only: the SDK has nothing to run, so the model's calls come back to the test."""
    return types.GenerateContentConfig(tools=[types.Tool(function_declarations=list(functions))])


def calls_of(response: types.GenerateContentResponse) -> list[tuple[str, dict]]:
    """The calls' names and arguments, less get_weather's optional `unit`: an enum the prompt says nothing about, so
    the emulator may or may not fill it (from the schema, never with a name from the prompt)."""
    calls = []
    for c in response.function_calls or []:
        assert c.args.get("unit") in (None, "celsius", "fahrenheit")
        calls.append((c.name, {k: v for k, v in c.args.items() if k != "unit"}))
    return calls


def test_independent_calls_come_in_one_turn(client):
    both_cities = client.models.generate_content(model=MODEL, contents="What is the weather in Boston and in New York?",
                                                 config=declared(WEATHER, STOCK))
    assert calls_of(both_cities) == [("get_weather", {"city": "Boston"}), ("get_weather", {"city": "New York"})]
    assert len({c.id for c in both_cities.function_calls}) == 2

    # Each function takes the names of its own part of the prompt, in the order the prompt names them.
    two_functions = client.models.generate_content(
        model=MODEL, contents="Get the weather in Boston and the stock price of GOOG", config=declared(STOCK, WEATHER))
    assert calls_of(two_functions) == [("get_weather", {"city": "Boston"}), ("get_stock_price", {"symbol": "GOOG"})]

    # A function named with no place of its own shares the next one's: "the weather and the time in Paris".
    shared = client.models.generate_content(model=MODEL, contents="What is the weather and the time in Paris?",
                                            config=declared(WEATHER, TIME))
    assert calls_of(shared) == [("get_weather", {"city": "Paris"}), ("get_time", {"city": "Paris"})]


def test_automatic_function_calling_answers_with_what_the_functions_returned(client):
    # Values the server cannot know beforehand: the answer has them only if it read the function responses.
    sky, clock = f"sky-{secrets.token_hex(4)}", f"clock-{secrets.token_hex(4)}"
    seen = []

    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        seen.append(("get_weather", city))
        return f"{sky} over {city}"

    def get_time(city: str) -> str:
        """Get the local time in a city."""
        seen.append(("get_time", city))
        return f"{clock} in {city}"

    response = client.models.generate_content(
        model=MODEL, contents="What is the weather in Boston and the time in Tokyo?",
        config=types.GenerateContentConfig(tools=[get_weather, get_time]))
    assert seen == [("get_weather", "Boston"), ("get_time", "Tokyo")]
    assert f"{sky} over Boston" in response.text and f"{clock} in Tokyo" in response.text
    assert response.function_calls is None
    history = response.automatic_function_calling_history
    assert [c.role for c in history] == ["user", "model", "user"]
    assert [(p.function_call.name, p.function_call.args) for p in history[1].parts] == [
        ("get_weather", {"city": "Boston"}), ("get_time", {"city": "Tokyo"})]
    assert [p.function_response.response for p in history[2].parts] == [
        {"result": f"{sky} over Boston"}, {"result": f"{clock} in Tokyo"}]


def test_numbers_in_the_prompt_become_numeric_arguments(client):
    seen = []

    def scale(value: int, factor: int) -> int:
        """Multiply a value by a factor, plus a constant the model cannot guess."""
        seen.append((value, factor))
        return value * factor + 7

    response = client.models.generate_content(model=MODEL, contents="Scale 1000 by 3, please.",
                                              config=types.GenerateContentConfig(tools=[scale]))
    assert seen == [(1000, 3)]
    assert "3007" in response.text


def test_a_chained_call_waits_for_the_answer_it_needs(client):
    town = f"Town {secrets.token_hex(3)}"  # a short string: the next step takes it whole as its place
    seen = []

    def get_user_location() -> str:
        """Where the user is."""
        seen.append(("get_user_location", None))
        return town

    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        seen.append(("get_weather", city))
        return f"drizzle in {city}"

    response = client.models.generate_content(
        model=MODEL, contents="Find my location, then get the weather there.",
        config=types.GenerateContentConfig(tools=[get_user_location, get_weather]))
    assert seen == [("get_user_location", None), ("get_weather", town)]
    assert [c.role for c in response.automatic_function_calling_history] == ["user", "model", "user", "model", "user"]
    assert town in response.text and f"drizzle in {town}" in response.text


def test_an_agent_loop_ends_and_never_repeats_a_call(client):
    """The app's own loop, as an agent framework runs it: answer every call until the model answers in text."""
    config = declared(LOCATION, WEATHER, TIME)
    contents = [types.Content(role="user", parts=[types.Part(text="Find my location, then get the weather and "
                                                                  "the time there.")])]
    made, turns = [], []
    for _ in range(10):  # more than enough: the loop must end by itself well before
        response = client.models.generate_content(model=MODEL, contents=contents, config=config)
        if not response.function_calls:
            break
        turns.append(calls_of(response))
        made += [json.dumps([c.name, c.args], sort_keys=True) for c in response.function_calls]
        answers = {"get_user_location": "Lyon", "get_weather": "mild", "get_time": "noon"}
        contents += [response.candidates[0].content, types.Content(role="user", parts=[
            types.Part.from_function_response(name=c.name, response={"result": answers[c.name]})
            for c in response.function_calls])]
    assert turns == [[("get_user_location", {})],
                     [("get_weather", {"city": "Lyon"}), ("get_time", {"city": "Lyon"})]]
    assert len(made) == len(set(made))
    assert all(word in response.text for word in ("Lyon", "mild", "noon"))


def test_the_same_request_gives_the_same_calls(client):
    def ask() -> list[tuple[str, dict, str]]:
        response = client.models.generate_content(model=MODEL, contents="What is the weather in Boston and in Oslo?",
                                                  config=declared(WEATHER, TIME))
        return [(c.name, c.args, c.id) for c in response.function_calls]

    first = ask()
    assert len(first) == 2 and first == ask()


def test_a_stream_without_automatic_function_calling_carries_the_calls(client):
    seen = []

    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        seen.append(city)
        return "sunny"

    config = types.GenerateContentConfig(
        tools=[get_weather], automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
    chunks = list(client.models.generate_content_stream(
        model=MODEL, contents="What is the weather in Boston and in New York?", config=config))
    calls = [(c.name, c.args) for chunk in chunks for c in chunk.function_calls or []]
    assert calls == [("get_weather", {"city": "Boston"}), ("get_weather", {"city": "New York"})]
    assert seen == []  # disabled: the SDK hands the calls over instead of running the function
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    # python-genai's own test_disable_automatic_function_calling_stream asks this of every chunk: no chunk of
    # text (an empty one included) beside the calls.
    assert all(chunk.parts and chunk.parts[0].function_call for chunk in chunks)


def test_a_prompt_that_names_no_function_gets_text(client):
    seen = []

    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        seen.append(city)
        return "sunny"

    response = client.models.generate_content(model=MODEL, contents="Tell me a joke",
                                              config=types.GenerateContentConfig(tools=[get_weather]))
    assert seen == [] and response.function_calls is None and response.text


OAI_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Get the weather in a city",
                                      "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                                                     "required": ["location"]}}},
    {"type": "function", "function": {"name": "get_stock_price", "description": "Get the price of a stock",
                                      "parameters": {"type": "object", "properties": {"symbol": {"type": "string"}},
                                                     "required": ["symbol"]}}},
]


@pytest.fixture
def oai(server) -> OpenAI:
    return OpenAI(api_key=server.api_key, base_url=server.base_url + "/v1beta/openai/", max_retries=0)


def test_openai_two_tools_give_two_tool_calls(oai):
    messages = [{"role": "user", "content": "What's the weather in Chicago and the stock price of GOOG?"}]
    first = oai.chat.completions.create(model=MODEL, messages=messages, tools=OAI_TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"location": "Chicago"}), ("get_stock_price", {"symbol": "GOOG"})]
    assert len({c.id for c in calls}) == 2
    results = {"get_weather": "windy, 12 degrees", "get_stock_price": "1234.5"}
    messages += [choice.message.model_dump(exclude_none=True)] + [
        {"role": "tool", "tool_call_id": c.id, "content": results[c.function.name]} for c in calls]
    second = oai.chat.completions.create(model=MODEL, messages=messages, tools=OAI_TOOLS)
    assert second.choices[0].finish_reason == "stop" and not second.choices[0].message.tool_calls
    assert "windy, 12 degrees" in second.choices[0].message.content and "1234.5" in second.choices[0].message.content


# What python-genai's own suite asks of a model, answered offline ---------------------------------------------------
def test_arithmetic_names_the_function_that_does_it(client):
    seen = []

    def divide_numbers(a: float, b: float) -> float:
        """Divide two numbers."""
        seen.append((a, b))
        return a / b

    response = client.models.generate_content(model=MODEL, contents="what is the result of 1001.0/2.0?",
                                              config=types.GenerateContentConfig(tools=[divide_numbers]))
    assert seen == [(1001.0, 2.0)]
    assert "500.5" in response.text


class City(pydantic.BaseModel):
    city_name: str


def test_an_object_argument_takes_the_prompts_name_and_the_answer_says_what_was_asked(client):
    token = secrets.token_hex(4)

    def get_weather_for(city: City, is_winter: bool) -> str:
        """Get the weather in a city."""
        return f"cold-{token}" if is_winter else f"warm-{token}"

    response = client.models.generate_content(model=MODEL, contents="What is the weather in Boston in winter?",
                                              config=types.GenerateContentConfig(tools=[get_weather_for]))
    (call,) = [p.function_call for c in response.automatic_function_calling_history for p in c.parts
               if p.function_call]
    assert call.args["city"] == {"city_name": "Boston"}
    assert token in response.text and "Boston" in response.text  # the answer tells what the call was given


def test_a_list_answer_has_an_item_for_each_name_the_prompt_gives(client):
    class Summary(pydantic.BaseModel):
        summary: str
        person: str

    response = client.models.generate_content(
        model=MODEL, contents=["Summarize the work of Ada Lovelace", "Summarize the work of Grace Hopper"],
        config=types.GenerateContentConfig(response_mime_type="application/json", response_schema=list[Summary]))
    assert [s.person for s in response.parsed] == ["Ada Lovelace", "Grace Hopper"]
