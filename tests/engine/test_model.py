"""The scripted model: recall from every source, echo, transcripts, scripted tool calls, robustness."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtsim.simulator.model import (
    GREETING_REPLY,
    NOTHING_REMEMBERED_REPLY,
    UNHEARD_REPLY,
    Reply,
    Script,
    ScriptedModel,
    ScriptError,
    ToolCall,
    attribute_reply,
    count_tokens,
    echo_reply,
    home_reply,
    is_unknown_reply,
    item_text,
    known_facts,
    name_reply,
    origin_reply,
    subject_reply,
    tool_result_reply,
)

# --- conversation builders (OpenAI Realtime GA item shapes) ----------------------------------------


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def user_audio(transcript: str | None) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_audio", "transcript": transcript}]}


def assistant(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "assistant", "content": [{"type": "output_audio", "transcript": text}]}


def system(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "system", "content": [{"type": "input_text", "text": text}]}


def function_call(name: str, arguments: str, call_id: str) -> dict[str, Any]:
    return {"type": "function_call", "name": name, "arguments": arguments, "call_id": call_id}


def function_output(call_id: str, output: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def answer(*items: dict[str, Any], instructions: str = "") -> str:
    return ScriptedModel().reply(list(items), instructions=instructions).text


WEATHER_TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}

# --- reply formats ------------------------------------------------------------------------------------


def test_reply_format_helpers_are_exact() -> None:
    assert attribute_reply("name", "Alice") == name_reply("Alice") == "Your name is Alice."
    assert attribute_reply("favourite colour", None) == "I don't know your favourite colour."
    assert home_reply("Paris") == "You live in Paris."
    assert home_reply(None) == "I don't know where you live."
    assert origin_reply("Lyon") == "You are from Lyon."
    assert origin_reply(None) == "I don't know where you are from."
    assert subject_reply("the wifi password", "hunter2") == "The wifi password is hunter2."
    assert subject_reply("the wifi password", None) == "I don't know the wifi password."
    assert echo_reply("  hello   there!  ") == "You said: hello there."
    assert echo_reply(" ... ") == UNHEARD_REPLY
    assert tool_result_reply(" 21C ") == "The result is: 21C."
    assert is_unknown_reply(name_reply(None)) and is_unknown_reply(home_reply(None))
    assert not is_unknown_reply(name_reply("Alice"))


# --- recall from each source --------------------------------------------------------------------------


def test_recall_from_user_message() -> None:
    assert answer(user("Hi, my name is Alice."), user("What is my name?")) == "Your name is Alice."


def test_recall_from_user_audio_transcript() -> None:
    reply = answer(user_audio("my name is Alice and I live in Paris"), user_audio("where do I live"))
    assert reply == home_reply("Paris")


def test_recall_from_assistant_second_person() -> None:
    assert answer(assistant("Your name is Alice."), user("who am I?")) == name_reply("Alice")
    assert answer(assistant("You live in Berlin."), user("where do I live?")) == home_reply("Berlin")


def test_recall_from_assistant_echo_of_user() -> None:
    # The model's own echo quotes the user, so a client that kept only assistant transcripts still recalls.
    assert answer(assistant(echo_reply("I'm from Lyon")), user("Where am I from?")) == origin_reply("Lyon")


def test_assistant_first_person_is_not_about_the_user() -> None:
    assert answer(assistant("My name is Ava, your assistant."), user("what's my name?")) == name_reply(None)


def test_recall_from_system_summary_in_third_person() -> None:
    summary = system("Summary of the conversation so far: the user's name is Alice; they live in Paris.")
    both = answer(summary, user("What is my name and where do I live?"))
    assert both == "Your name is Alice. You live in Paris."
    colour = system("User's favourite colour is green. The user is from Lyon.")
    assert answer(colour, user("what's my favourite colour?")) == attribute_reply("favourite colour", "green")
    assert answer(colour, user("where am I originally from?")) == origin_reply("Lyon")


def test_recall_from_system_reported_speech() -> None:
    summary = system("The user said their name was Eve and that they lived in Rome.")
    assert answer(summary, user("who am i")) == name_reply("Eve")
    assert answer(summary, user("where do I live")) == home_reply("Rome")


def test_recall_from_instructions() -> None:
    instructions = "You are a helpful agent. The user's name is Zed and the user lives in Oslo."
    assert answer(user("what's my name"), instructions=instructions) == name_reply("Zed")
    assert answer(user("where do I live?"), instructions=instructions) == home_reply("Oslo")


def test_recall_from_replayed_transcript_in_one_message() -> None:
    replay = user("Previous conversation:\nUser: my order number is 4711\nAssistant: Noted.")
    assert answer(replay, user("what is my order number?")) == attribute_reply("order number", "4711")


def test_unknown_fact_is_reported_as_unknown() -> None:
    assert answer(user("what's my name?")) == "I don't know your name."
    assert answer(user("where do I live?")) == "I don't know where you live."
    assert answer(user("what is the wifi password?")) == "I don't know the wifi password."
    assert answer(user("Hello!"), user("what's my dog's name")) == "I don't know your dog's name."


def test_context_lost_after_reconnect_is_visible() -> None:
    full = [user("My name is Alice."), assistant(echo_reply("My name is Alice.")), user("What's my name?")]
    assert answer(*full) == name_reply("Alice")
    assert is_unknown_reply(answer(full[-1]))  # a client that dropped history


# --- statement patterns --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "question", "expected"),
    [
        ("My name is Alice Smith.", "what is my name", name_reply("Alice Smith")),
        ("my name's Grace", "What\u2019s my name?", name_reply("Grace")),
        ("I'm Bob, nice to meet you", "who am I?", name_reply("Bob")),
        ("Hello, I am Carol", "what's my name?", name_reply("Carol")),
        ("Hi, this is Frank calling about my order", "who am I", name_reply("Frank")),
        ("call me Al please", "what's my name", name_reply("Al")),
        ("MY NAME IS DAVE!!!", "what is my name???", name_reply("DAVE")),
        ("My favorite color is green.", "what's my favourite colour?",
         attribute_reply("favourite colour", "green")),
        ("my dog's name is Rex", "what's my dog's name again?", attribute_reply("dog's name", "Rex")),
        ("My order number is A-1234.", "Do you remember my order number?",
         attribute_reply("order number", "A-1234")),
        ("I live in New York City now.", "where do I live", home_reply("New York City")),
        ("I just moved to Berlin", "Where am I living?", home_reply("Berlin")),
        ("I'm originally from Lyon, France", "where am I from", origin_reply("Lyon, France")),
        ("My hometown is Cork.", "where do I come from?", origin_reply("Cork")),
        ("Remember that the door code is 4521.", "What is the door code?",
         subject_reply("the door code", "4521")),
        ("remember that my locker is 12", "what's my locker", attribute_reply("locker", "12")),
        ("The wifi password is 'hunter2'.", "do you remember the wifi password?",
         subject_reply("the wifi password", "hunter2")),
        ("remember that Bob's birthday is May 5", "what is Bob's birthday?",
         subject_reply("Bob's birthday", "May 5")),
    ],
)
def test_statement_patterns(statement: str, question: str, expected: str) -> None:
    assert answer(user(statement), user(question)) == expected


@pytest.mark.parametrize(
    "statement",
    ["I am tired", "I'm Sorry, I am Not sure", "call me back later", "I'm going home", "my name is"],
)
def test_non_statements_do_not_set_a_name(statement: str) -> None:
    assert answer(user(statement), user("what's my name?")) == name_reply(None)


def test_clause_boundaries_end_values() -> None:
    text = "My name is Alice and I live in Paris, and my favourite colour is blue but I'm from Rome"
    facts = known_facts([user(text)])
    assert facts == {"name": "Alice", "home": "Paris", "favourite colour": "blue", "origin": "Rome"}


def test_third_person_pronouns_only_count_in_system_text() -> None:
    # In user speech "his name" is someone else's; in a system summary it means the user.
    assert known_facts([user("My brother visited. His name is Tom.")]) == {}
    assert known_facts([system("His name is Tom.")]) == {"name": "Tom"}


def test_latest_statement_wins_across_sources() -> None:
    conversation = [
        system("Summary: the user's name is Alice; they live in Paris."),
        user("Actually, my name is Bob."),
        assistant("You moved to Madrid."),
        user("call me Robert"),
    ]
    assert known_facts(conversation, "The user's name is Zed.") == {"name": "Robert", "home": "Madrid"}
    assert answer(*conversation, user("who am I?")) == name_reply("Robert")
    # Conversation items are newer than the session instructions.
    newer = answer(user("I'm Ann"), user("what's my name"), instructions="The user's name is Zed.")
    assert newer == name_reply("Ann")


def test_statement_and_question_in_one_turn() -> None:
    assert answer(user("My name is Alice. What is my name?")) == name_reply("Alice")


def test_remember_everything() -> None:
    conversation = [user("My name is Alice. I'm from Lyon."), user("Remember that the code is 99.")]
    assert answer(*conversation, user("Do you remember me?")) == (
        f"{name_reply('Alice')} {origin_reply('Lyon')} {subject_reply('the code', '99')}"
    )
    assert answer(user("do you remember anything about me?")) == NOTHING_REMEMBERED_REPLY


def test_what_is_x_without_article_is_a_question_only_for_known_facts() -> None:
    assert answer(user("what is love?")) == echo_reply("what is love?")
    assert answer(user("remember that Project X is cancelled"), user("what is project x")) == subject_reply(
        "project x", "cancelled"
    )


# --- echo, greeting, audio -------------------------------------------------------------------------------


def test_echo_when_no_question() -> None:
    assert answer(user("Hello there!")) == "You said: Hello there."
    assert answer(user("My name is Alice.")) == echo_reply("My name is Alice.")


def test_greeting_without_user_message() -> None:
    model = ScriptedModel()
    assert model.reply([]) == Reply(GREETING_REPLY)
    assert model.reply([system("Be nice."), assistant("Hi")]).text == GREETING_REPLY


def test_reply_is_for_the_last_user_turn() -> None:
    reply = answer(user("what's my name"), user("thanks"), assistant("You're welcome."))
    assert reply == echo_reply("thanks")


def test_audio_without_transcript_is_unheard() -> None:
    assert answer(user_audio(None)) == UNHEARD_REPLY
    assert answer(user_audio("my name is Alice"), user_audio(None)) == UNHEARD_REPLY
    assert known_facts([user_audio(None), user_audio("my name is Alice")]) == {"name": "Alice"}


def test_beta_era_content_parts_are_read() -> None:
    beta_text = {"type": "message", "role": "user", "content": [{"type": "text", "text": "my name is Beta"}]}
    beta_audio = {"type": "message", "role": "user", "content": [{"type": "audio", "transcript": "who am I"}]}
    assert answer(beta_text, beta_audio) == name_reply("Beta")


def test_echo_mode_does_not_recall() -> None:
    model = ScriptedModel(Script.from_dict({"default": "echo"}))
    reply = model.reply([user("my name is Alice"), user("what is my name?")])
    assert reply.text == echo_reply("what is my name?")


def test_transcribe_returns_scripted_transcripts_in_order() -> None:
    model = ScriptedModel(Script.from_dict({"transcripts": ["my name is Alice", None, "who am I"]}))
    assert [model.transcribe(n) for n in range(4)] == ["my name is Alice", None, "who am I", None]
    assert model.transcribe(-1) is None
    assert ScriptedModel().transcribe(0) is None


# --- item_text and count_tokens ----------------------------------------------------------------------------


def test_item_text_reads_every_item_kind() -> None:
    parts = [{"type": "input_text", "text": "hi"}, {"type": "input_audio", "transcript": "there"}]
    two_parts = {"type": "message", "role": "user", "content": parts}
    assert item_text(two_parts) == "hi\nthere"
    assert item_text(user_audio(None)) == ""
    assert item_text(function_call("get_weather", '{"city":"Paris"}', "c1")) == 'get_weather {"city":"Paris"}'
    assert item_text(function_output("c1", "sunny")) == "sunny"
    assert item_text({"type": "message", "role": "user", "content": None}) == ""
    assert item_text({"type": "unknown"}) == ""


def test_count_tokens_estimate() -> None:
    assert count_tokens("") == 0
    assert count_tokens("a") == 1
    assert count_tokens("abcd") == 1
    assert count_tokens("abcde") == 2
    assert count_tokens("x" * 400) == 100


@given(st.text(), st.text())
def test_count_tokens_is_monotonic(prefix: str, suffix: str) -> None:
    assert count_tokens(prefix + suffix) >= count_tokens(prefix)
    assert (count_tokens(prefix) >= 1) == bool(prefix)


# --- scripts: rules, tool calls, resumption ----------------------------------------------------------------

WEATHER_SCRIPT = """
default: recall
transcripts:
  - "My name is Alice."
  - null
replies:
  - turn: 0
    say: "Nice to meet you!"
  - match: "weather in (\\\\w+)"
    tool_call:
      name: get_weather
      arguments: {city: "{1}", units: metric, days: 2}
    after_tool: "It is {output} in {1}."
  - match: "(?P<greeting>hello|hi)\\\\b"
    say: "{greeting} {name}! ({text})"
  - match: "two tools"
    say: "Checking both."
    tool_calls:
      - {name: get_weather, arguments: '{"city": "Oslo"'}
      - {name: get_time}
"""


@pytest.fixture
def weather_model(tmp_path: Path) -> ScriptedModel:
    path = tmp_path / "weather.yaml"
    path.write_text(WEATHER_SCRIPT, encoding="utf-8")
    return ScriptedModel(Script.load(path), seed=7)


def test_turn_rule_matches_only_that_user_turn(weather_model: ScriptedModel) -> None:
    assert weather_model.reply([user("my name is Alice")]).text == "Nice to meet you!"
    assert weather_model.reply([user("a"), user("my name is Alice")]).text == echo_reply("my name is Alice")


def test_match_rule_with_named_group_fact_and_text(weather_model: ScriptedModel) -> None:
    conversation = [user("my name is Alice"), user("Hello again")]
    assert weather_model.reply(conversation).text == "Hello Alice! (Hello again)"
    # An unknown fact renders as nothing rather than failing.
    assert weather_model.reply([user("x"), user("hi")]).text == "hi ! (hi)"


def test_tool_call_rule_and_resumption(weather_model: ScriptedModel) -> None:
    conversation = [user("my name is Alice"), user("What's the weather in Paris?")]
    reply = weather_model.reply(conversation, tools=[WEATHER_TOOL], response_index=1)
    assert reply.text == ""
    assert len(reply.tool_calls) == 1
    call = reply.tool_calls[0]
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris", "units": "metric", "days": 2}
    assert re.fullmatch(r"call_[0-9a-f]{16}", call.call_id)

    conversation += [
        function_call(call.name, call.arguments, call.call_id),
        function_output(call.call_id, "sunny"),
    ]
    assert weather_model.reply(conversation, tools=[WEATHER_TOOL]).text == "It is sunny in Paris."
    # Without a scripted after_tool, the default resumption reports the output.
    assert ScriptedModel().reply(conversation).text == tool_result_reply("sunny")


def test_undeclared_tool_is_not_called(weather_model: ScriptedModel) -> None:
    # A client that forgot to re-send its tools after reconnecting gets no tool call, like from a real model.
    conversation = [user("x"), user("weather in Paris?")]
    reply = weather_model.reply(conversation, tools=[])
    assert reply.tool_calls == ()
    assert reply.text == echo_reply("weather in Paris?")
    lenient = ScriptedModel(Script.from_dict({"require_declared_tools": False, "replies": [
        {"match": "weather", "tool_call": {"name": "get_weather"}}]}))
    assert lenient.reply(conversation).tool_calls[0].arguments == "{}"


def test_chat_completions_tool_shape_is_accepted(weather_model: ScriptedModel) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather"}}]
    reply = weather_model.reply([user("x"), user("weather in Rome")], tools=tools)
    assert reply.tool_calls[0].name == "get_weather"


def test_several_tool_calls_and_verbatim_string_arguments(weather_model: ScriptedModel) -> None:
    tools = [WEATHER_TOOL, {"type": "function", "name": "get_time"}]
    reply = weather_model.reply([user("x"), user("use two tools")], tools=tools)
    assert reply.text == "Checking both."
    assert [call.name for call in reply.tool_calls] == ["get_weather", "get_time"]
    assert reply.tool_calls[0].arguments == '{"city": "Oslo"'  # malformed on purpose, sent as written
    assert reply.tool_calls[1].arguments == "{}"
    assert len({call.call_id for call in reply.tool_calls}) == 2


def test_parallel_tool_outputs_are_joined() -> None:
    conversation = [user("go"), function_call("a", "{}", "c1"), function_call("b", "{}", "c2"),
                    function_output("c1", "one"), function_output("c2", "two")]
    assert answer(*conversation) == tool_result_reply("one; two")


def test_fixed_default_reply_is_a_template() -> None:
    model = ScriptedModel(Script.from_dict({"default": "Sorry {name}, I only talk about the weather."}))
    reply = model.reply([user("I'm Ann"), user("tell me a joke")])
    assert reply.text == "Sorry Ann, I only talk about the weather."


def test_rule_with_match_and_turn_needs_both() -> None:
    model = ScriptedModel(Script.from_dict({"replies": [{"turn": 1, "match": "^yes", "say": "Great."}]}))
    assert model.reply([user("hi"), user("yes please")]).text == "Great."
    assert model.reply([user("yes please")]).text == echo_reply("yes please")
    assert model.reply([user("hi"), user("no")]).text == echo_reply("no")


def test_say_template_can_use_facts_with_spelling_variants() -> None:
    script = Script.from_dict({"replies": [{"match": "colour", "say": "{favorite color}/{home}"}]})
    model = ScriptedModel(script)
    conversation = [user("my favourite colour is red and I live in Rome"), user("colour?")]
    assert model.reply(conversation).text == "red/Rome"


def test_empty_script_file_is_the_default_script(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    assert Script.load(path) == Script()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"replies": [{"match": "(", "say": "x"}]}, "bad regex"),
        ({"replies": [{"match": "x"}]}, "needs 'say' or 'tool_call'"),
        ({"replies": [{"say": "x", "after_tool": "y"}]}, "only a rule with a tool call"),
        ({"replies": [{"say": "{unclosed"}]}, "bad template"),
        ({"replies": [{"say": "x", "sya": "typo"}]}, "unknown keys"),
        ({"replies": [{"turn": -1, "say": "x"}]}, "non-negative"),
        ({"replies": [{"tool_call": {"arguments": {}}}]}, "'name'"),
        ({"transcripts": [1, 2]}, "transcripts"),
        ({"replys": []}, "unknown script keys"),
        (["not", "a", "mapping"], "a script is a mapping"),
    ],
)
def test_invalid_scripts_are_rejected_with_a_reason(data: Any, message: str) -> None:
    with pytest.raises(ScriptError, match=re.escape(message)):
        Script.from_dict(data)


def test_invalid_yaml_and_unrepresentable_arguments(tmp_path: Path) -> None:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("replies: [\n", encoding="utf-8")
    with pytest.raises(ScriptError, match="not valid YAML"):
        Script.load(bad_yaml)
    dated = tmp_path / "dated.yaml"
    dated.write_text(
        "replies:\n  - tool_call: {name: book, arguments: {day: 2024-05-01}}\n", encoding="utf-8"
    )
    with pytest.raises(ScriptError, match="not representable as JSON"):
        Script.load(dated)


# --- determinism ------------------------------------------------------------------------------------------


def test_replies_and_call_ids_are_deterministic() -> None:
    script = Script.from_dict({"replies": [{"match": "weather", "tool_call": {"name": "get_weather"}}]})
    conversation = [user("my name is Alice"), user("weather?")]

    def call_id(seed: int, response_index: int) -> str:
        model = ScriptedModel(script, seed=seed)
        reply = model.reply(conversation, tools=[WEATHER_TOOL], response_index=response_index)
        return reply.tool_calls[0].call_id

    assert call_id(1, 0) == call_id(1, 0)
    assert len({call_id(1, 0), call_id(2, 0), call_id(1, 1)}) == 3
    assert ScriptedModel(seed=1).reply(conversation[:1]) == ScriptedModel(seed=2).reply(conversation[:1])
    reply = ScriptedModel(script).reply(conversation, tools=[WEATHER_TOOL])
    assert reply == ScriptedModel(script).reply(list(conversation), tools=[WEATHER_TOOL])
    assert isinstance(reply.tool_calls[0], ToolCall)


# --- robustness and speed ----------------------------------------------------------------------------------

_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30) | st.floats(allow_nan=True),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_part = st.fixed_dictionaries(
    {"type": st.sampled_from(
        ["input_text", "input_audio", "output_text", "output_audio", "text", "audio", "x"]
    )},
    optional={"text": _junk | st.text(), "transcript": _junk | st.text()},
)
_item = st.one_of(
    _junk,
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["message", "function_call", "function_call_output", "other"]) | _junk,
            "role": st.sampled_from(["user", "assistant", "system", "developer"]) | _junk,
            "content": st.lists(_part | _junk, max_size=3) | _junk,
            "name": _junk,
            "arguments": _junk,
            "output": _junk,
            "call_id": _junk,
        },
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    conversation=st.lists(_item, max_size=8), instructions=_junk, tools=_junk, response_index=st.integers()
)
def test_malformed_input_never_raises(
    conversation: list[Any], instructions: Any, tools: Any, response_index: int
) -> None:
    rule = {
        "match": "(a)(b)?",
        "say": "{1}{2}{name}{text}",
        "tool_call": {"name": "t", "arguments": {"x": "{0}"}},
        "after_tool": "{output}",
    }
    script = Script.from_dict({"replies": [rule], "require_declared_tools": False})
    for model in (ScriptedModel(), ScriptedModel(script)):
        reply = model.reply(
            conversation, instructions=instructions, tools=tools, response_index=response_index
        )
        assert isinstance(reply, Reply) and isinstance(reply.text, str)
        assert all(isinstance(call.arguments, str) for call in reply.tool_calls)
    for item in conversation:
        assert isinstance(item_text(item), str)


@given(st.text(max_size=300))
def test_arbitrary_user_text_gets_a_reply(text: str) -> None:
    reply = ScriptedModel().reply([user(text), user_audio(text), system(text), user(text)])
    assert reply.text and reply.tool_calls == ()


def test_odd_conversation_containers_are_treated_as_empty() -> None:
    model = ScriptedModel()
    for conversation in (None, "user: hi", {"role": "user"}, 42, iter([user("hi")])):
        assert model.reply(conversation).text in (GREETING_REPLY, echo_reply("hi"))  # type: ignore[arg-type]


def test_a_few_hundred_items_are_answered_quickly() -> None:
    chatter = ["Can you book a table for two tomorrow evening?", "Sure, what time suits you?",
               "Something near the station, my name is Alice.", "The closest one is Chez Marie."]
    conversation = [(user if n % 2 == 0 else assistant)(f"{chatter[n % 4]} ({n})") for n in range(300)]
    conversation.append(user("what's my name?"))
    model = ScriptedModel()
    assert model.reply(conversation).text == name_reply("Alice")  # first call parses every item once
    runs = 20
    started = time.perf_counter()
    for _ in range(runs):
        model.reply(conversation)
    per_reply = (time.perf_counter() - started) / runs
    assert per_reply < 0.005, f"{per_reply * 1000:.2f} ms per reply"  # ~0.4 ms here; slack for shared CI
