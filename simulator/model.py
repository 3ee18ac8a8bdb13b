"""The scripted model: the deterministic "brain" behind the fake Realtime server.

Its main job is to expose clients that lose conversation context when they reconnect. By default it
answers the last user turn *from the conversation it can see*: it recalls facts stated earlier and
otherwise echoes. A client that reconnects without restoring context (replaying items, injecting a
summary, or re-sending instructions) gets "I don't know your name." instead of "Your name is Alice."

Reply formats (exact; use the helper functions below rather than copying strings)
---------------------------------------------------------------------------------
- no user message yet:             ``GREETING_REPLY``  "Hello! How can I help you today?"
- empty / unheard user turn:       ``UNHEARD_REPLY``   "Sorry, I didn't catch that."
- echo:                            ``echo_reply(text)``   "You said: <text>."  (whitespace collapsed,
                                   trailing ``.!?,;:`` dropped before the final ".")
- attribute questions:             ``attribute_reply("name", "Alice")`` "Your name is Alice." /
                                   ``attribute_reply("name", None)``    "I don't know your name."
- "where do I live?":              ``home_reply("Paris")`` "You live in Paris." /
                                   "I don't know where you live."
- "where am I from?":              ``origin_reply("Lyon")`` "You are from Lyon." /
                                   "I don't know where you are from."
- "what is the <X>?":              ``subject_reply("the wifi password", "hunter2")``
                                   "The wifi password is hunter2." / "I don't know the wifi password."
- "do you remember me?":           every known fact's reply joined by " ", or ``NOTHING_REMEMBERED_REPLY``
- after a function_call_output:    ``tool_result_reply(output)`` "The result is: <output>."
  (an MCP call's output or error counts the same)
- an MCP approval declined:        ``mcp_declined_reply(name)`` "I won't use <name>, as you asked."
Every "unknown" reply starts with ``UNKNOWN_PREFIX`` ("I don't know"); see ``is_unknown_reply``.
Attribute and subject names in replies are the question's words as asked ("what's my favorite color?" ->
"Your favorite color is green."); values keep the casing they were stated with. Known subjects start with a
capital ("The wifi password is ..."). Several questions in one
turn ("what is my name and where do I live?") get their answers joined by a single space.

Facts the model recognises (case-insensitive, punctuation-tolerant; the latest statement wins)
---------------------------------------------------------------------------------------------
Sources, oldest first: the session instructions (as a system source), then every message in order.
- user speech: "my <attribute> is/are/'s <value>" (name, favourite colour, dog's name, order number, ...),
  "I'm <Name>" / "I am <Name>" / "this is <Name>" (only capitalised words, so "I am tired" is ignored),
  "call me <name>", "I live in <place>" / "I moved to <place>", "I'm from <place>" / "I come from <place>".
- assistant speech: "your <attribute> is <value>", "you live in <place>", "you are from <place>", and
  "You said: <user speech>" (the model's own echo) is read as user speech.
- system messages and instructions (third person): "the user's <attribute> is <value>",
  "the user is called <name>", "the user lives in <place>", "the user is from <place>", the same with
  "they/he/she" and "their/his/her", and "the user said (that) <user speech>".
- any role: "the user's ..." phrasings, "remember that <X> is <Y>", "the <X> is <Y>", and transcript-style
  lines "User: ..." / "Assistant: ..." (a replayed history pasted into one message).
Values end at the end of the clause: sentence punctuation, or a comma / "and" / "but" that starts a new
clause ("my name is Alice and I live in Paris"). Trailing fillers ("now", "please", "too", ...) are dropped.
Spelling variants share one fact ("favorite color" == "favourite colour"); "hometown" means where the
user is from, "home" where they live.

Questions: "what is/what's my <attribute>?", "who am I?", "(do you) remember/know my <attribute>?",
"tell me my <attribute>", "where do I live?", "where am I from?", "what is the <X>?",
"do you remember the <X>?", "what is <X>?" (only when <X> is a known fact), "do you remember me?".

Script file (YAML)
------------------
A script fixes replies, transcripts of user audio, and tool calls. Example::

    default: recall            # recall (the default) | echo | any other string: a fixed reply (a template)
    require_declared_tools: true   # tool rules fire only if the session declares that tool (default true)
    transcripts:               # what the Nth (0-based) user audio item of a session "said"
      - "My name is Alice."
      - null                   # this audio turn stays unheard (no transcript)
      - "What's the weather in Paris?"
    replies:                   # rules, first match wins
      - turn: 0                # the Nth (0-based) user message of the conversation
        say: "Nice to meet you!"
      - match: "weather in (\\w+)"     # regex searched in the user turn, case-insensitive
        tool_call:
          name: get_weather
          arguments: {city: "{1}"}     # string values are templates; a plain string is sent verbatim
        after_tool: "It is {output} in {1}."   # reply once the function_call_output arrives
      - match: "(?P<greeting>hello|hi)\\b"
        say: "{greeting} {name}!"      # {name}: a recalled fact

MCP servers (``type: "mcp"`` tools) are scripted too; the server never calls out::

    mcp_servers:               # what listing each server_label's tools returns
      docs:
        tools:
          - {name: search_docs, description: "Search the docs", input_schema: {type: object}}
    replies:
      - match: "search the docs for (\\w+)"
        mcp_call:
          server_label: docs   # optional: the first listed server offering the tool
          name: search_docs
          arguments: {query: "{1}"}
          output: "3 pages about {1}"   # or error: "..." (the call fails with a tool_execution_error)
        after_tool: "I found {output}."

A rule has ``match`` and/or ``turn`` (both must hold; neither = always), then ``say`` and/or
``tool_call`` (one mapping) / ``tool_calls`` (a list) / ``mcp_call``, and optionally ``after_tool``.
An ``mcp_call`` rule fires only once its server's tools are listed and the tool is allowed; a server
label the script does not describe lists no tools. Templates use
str.format fields: ``{0}`` the whole match, ``{1}``.. regex groups, ``{group_name}`` named groups,
``{text}`` the user turn, ``{output}`` the tool output (``after_tool``), and any fact by its key
(``{name}``, ``{favourite colour}``, ``{home}``, ``{origin}``, ``{the wifi password}``); unknown fields
render as "". Literal braces are ``{{`` ``}}``. A tool rule whose tool the session does not declare is
skipped, as a real model cannot call it — this is what catches clients that drop ``tools`` on reconnect.
call_ids are ``call_`` + 16 hex digits of a hash of (seed, turn, response_index, position), so runs are
reproducible. The seed only feeds call_ids: replies do not vary with it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import string
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from os import PathLike
from typing import Any, Literal

import yaml

# --------------------------------------------------------------------------------------------------
# Reply formats
# --------------------------------------------------------------------------------------------------

GREETING_REPLY = "Hello! How can I help you today?"
UNHEARD_REPLY = "Sorry, I didn't catch that."
NOTHING_REMEMBERED_REPLY = "I don't remember anything you told me."
UNKNOWN_PREFIX = "I don't know"

HOME = "home"  # fact key for where the user lives
ORIGIN = "origin"  # fact key for where the user is from
DEFAULT_RECALL = "recall"
DEFAULT_ECHO = "echo"

_SPACES = re.compile(r"\s+")


def _collapse(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def echo_reply(text: str) -> str:
    """'You said: <text>.' — or UNHEARD_REPLY when nothing is left of the text."""
    spoken = _collapse(text).rstrip(".!?,;: ")
    return f"You said: {spoken}." if spoken else UNHEARD_REPLY


def tool_result_reply(output: str) -> str:
    return f"The result is: {output.strip()}."


def mcp_declined_reply(name: str) -> str:
    return f"I won't use {name}, as you asked."


def attribute_reply(attribute: str, value: str | None) -> str:
    """'Your name is Alice.' when known, 'I don't know your name.' when value is None."""
    attribute = _collapse(attribute)
    return f"Your {attribute} is {value.strip()}." if value is not None else f"I don't know your {attribute}."


def name_reply(name: str | None) -> str:
    return attribute_reply("name", name)


def home_reply(place: str | None) -> str:
    return f"You live in {place.strip()}." if place is not None else "I don't know where you live."


def origin_reply(place: str | None) -> str:
    return f"You are from {place.strip()}." if place is not None else "I don't know where you are from."


def subject_reply(subject: str, value: str | None) -> str:
    """'The wifi password is hunter2.' / 'I don't know the wifi password.' (subject includes its article)."""
    subject = _collapse(subject)
    return f"{_sentence(subject)} is {value.strip()}." if value is not None else f"I don't know {subject}."


def is_unknown_reply(text: str) -> bool:
    return text.startswith(UNKNOWN_PREFIX)


# --------------------------------------------------------------------------------------------------
# Reply values
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text, streamed by the server as argument deltas
    call_id: str


@dataclass(frozen=True)
class McpCall:
    """A call of a tool on a remote MCP server, as the model makes it and the script answers it."""

    server_label: str
    name: str
    arguments: str  # JSON text, streamed as `response.mcp_call_arguments.delta`
    output: str | None = None  # what the server returns, or
    error: str | None = None  # the tool's execution error
    approval_request_id: str | None = None  # set when the call runs on an approved request


@dataclass(frozen=True)
class Reply:
    text: str  # may be "" when the reply is only tool calls
    tool_calls: tuple[ToolCall, ...] = ()
    mcp_calls: tuple[McpCall, ...] = ()


# --------------------------------------------------------------------------------------------------
# Reading items
# --------------------------------------------------------------------------------------------------

_TEXT_PART_TYPES = frozenset({"input_text", "output_text", "text"})
_AUDIO_PART_TYPES = frozenset({"input_audio", "output_audio", "audio"})


def _is_mapping(value: Any) -> bool:
    # isinstance(x, Mapping) is an ABC check, slow enough to matter per item per response; dicts go first.
    return isinstance(value, dict) or isinstance(value, Mapping)


def _as_text(value: Any) -> str:
    """Tool outputs/arguments should be strings; anything else is shown as JSON (or nothing)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return ""


def _part_text(part: Any) -> str:
    if not _is_mapping(part):
        return ""
    kind = part.get("type")
    if kind in _AUDIO_PART_TYPES:
        value = part.get("transcript")  # audio without a transcript is unheard
    elif kind in _TEXT_PART_TYPES or kind is None:
        value = part.get("text")
    else:
        return ""
    return value if isinstance(value, str) else ""


def item_text(item: Mapping[str, Any]) -> str:
    """The text a model 'sees' in an item: message text and transcripts (parts joined by newlines),
    a function call's name and arguments, a function call's output. Malformed items are empty."""
    if not _is_mapping(item):
        return ""
    kind = item.get("type", "message")
    if kind == "message":
        content = item.get("content")
        if isinstance(content, str):
            return content
        if not isinstance(content, (list, tuple)):
            return ""
        return "\n".join(text for text in map(_part_text, content) if text)
    if kind == "function_call":
        name = item.get("name")
        return " ".join(text for text in (name if isinstance(name, str) else "",
                                          _as_text(item.get("arguments"))) if text)
    if kind == "function_call_output":
        return _as_text(item.get("output"))
    if kind in ("mcp_call", "mcp_approval_request"):
        parts = (item.get("name"), _as_text(item.get("arguments")), _as_text(item.get("output")))
        return " ".join(part for part in parts if isinstance(part, str) and part)
    return ""


def count_tokens(text: str) -> int:
    """Cheap deterministic token estimate: ~4 characters a token, at least 1 for non-empty text."""
    if not isinstance(text, str) or not text:
        return 0
    return (len(text) + 3) // 4


def _is_message(item: Mapping[str, Any]) -> bool:
    return item.get("type", "message") == "message"


def _role(item: Mapping[str, Any]) -> str | None:
    role = item.get("role")
    return role if isinstance(role, str) and _is_message(item) else None


# --------------------------------------------------------------------------------------------------
# Facts
# --------------------------------------------------------------------------------------------------

FactKind = Literal["attribute", "subject"]


@dataclass(frozen=True)
class _Fact:
    key: str  # canonical: "name", "favourite colour", "home", "origin", "the wifi password"
    value: str
    kind: FactKind  # attribute: about the user ("your ..."); subject: anything else ("the ...")
    label: str  # the attribute or subject as stated, for "do you remember me?"


_SPELLING = {"favorite": "favourite", "favorites": "favourites", "color": "colour", "colors": "colours"}
_ATTRIBUTE_ALIASES = {"hometown": ORIGIN, "home town": ORIGIN, "home city": HOME}


def _canonical_attribute(attribute: str) -> str:
    words = [_SPELLING.get(word, word) for word in attribute.lower().split()]
    key = " ".join(words)
    return _ATTRIBUTE_ALIASES.get(key, key)


def _canonical_subject(subject: str) -> tuple[str, FactKind]:
    """'my code' is an attribute of the user; 'the code' / "bob's birthday" are subjects."""
    words = subject.lower().split()
    if words and words[0] == "my":
        return _canonical_attribute(" ".join(words[1:])), "attribute"
    return " ".join(_SPELLING.get(word, word) for word in words), "subject"


# One word of an attribute or subject ("dog's", "order", "e-mail"); never a verb that would end it.
_WORD = r"(?!(?:is|are|was|were)\b)[\w-]+(?:'s)?"
_ATTR = rf"{_WORD}(?:\s+{_WORD}){{0,3}}"
_IS = r"(?:\s+(?:is|are|was|were)\b|'s\b)\s*"
_VALUE = r"(?P<value>.+)"
_NAME_WORDS = r"(?P<value>[^\W\d_][\w'-]*(?:\s+[^\W\d_][\w'-]*){0,2})"
_USER = r"(?:the\s+)?(?:user|caller|customer)"
_PRONOUN = r"(?:they|he|she)"
_POSSESSIVE_PRONOUN = r"(?:their|his|her)"
_LIVES = (
    r"(?:lives?|lived|resides?|resided|(?:is|are|was|were)\s+(?:living|based)|(?:has|have|had)\s+moved"
    r"|moved)"
)
_ORIGIN_VERB = r"(?:is|are|was|were|comes?|came)\s+(?:originally\s+)?from"
_CALLED = r"(?:(?:is|are|was|were)\s+(?:called|named)|'s\s+called|goes\s+by|go\s+by)"

# Capitalised words after "I'm" that are not names ("I'm Sorry", "I am Not sure").
_NOT_NAMES = frozenset(
    """sorry fine good great ok okay here back ready not just also so very really sure glad happy tired
    hungry looking going trying calling the a an in at on it that this what still done busy interested
    afraid excited well doing getting having thinking wondering told called from living based hoping
    new sick bored fine thanks thank yes no about always never only actually""".split()
)
# Words after "call me" that are not names ("call me back", "call me at 5").
_NOT_CALL_NAMES = frozenset(
    """back later tomorrow today tonight when if at on in after before soon now again a an the anytime
    sometime whenever maybe please up any asap""".split()
)


def _leading_capitalised_name(raw: str) -> str | None:
    words = []
    for word in raw.split():
        if not word[:1].isupper():
            break
        words.append(word)
    if not words or words[0].lower() in _NOT_NAMES:
        return None
    return " ".join(words)


def _call_me_name(raw: str) -> str | None:
    value = _clean_value(raw)
    if not value or value.split()[0].lower() in _NOT_CALL_NAMES:
        return None
    return value


@dataclass(frozen=True)
class _StatementPattern:
    regex: re.Pattern[str]
    key: str | None = None  # fixed fact key; otherwise from the 'attr' or 'subject' group
    value_filter: Any = None  # callable(raw value) -> cleaned value or None (reject)


def _statement(pattern: str, key: str | None = None, value_filter: Any = None) -> _StatementPattern:
    return _StatementPattern(re.compile(pattern, re.IGNORECASE), key, value_filter)


_FIRST_PERSON = (
    _statement(rf"\bi(?:'m|m|\s+am|\s+come)\s+(?:originally\s+)?from\s+{_VALUE}", ORIGIN),
    _statement(
        rf"\bi(?:\s+(?:live|lived|reside)|(?:'m|m|\s+am)\s+(?:living|based)|(?:'ve|\s+have)?(?:\s+just"
        rf"|\s+recently)?\s+moved)\s+(?:in|to)\s+{_VALUE}",
        HOME,
    ),
    _statement(rf"\bmy\s+(?P<attr>{_ATTR}){_IS}{_VALUE}"),
    _statement(rf"\bcall\s+me\s+{_VALUE}", "name", _call_me_name),
    _statement(rf"\b(?:i(?:'m|m|\s+am)|this\s+is)\s+{_NAME_WORDS}", "name", _leading_capitalised_name),
)
_SECOND_PERSON = (
    _statement(rf"\byou(?:'re|\s+are|\s+come)\s+(?:originally\s+)?from\s+{_VALUE}", ORIGIN),
    _statement(
        rf"\byou(?:\s+(?:live|lived|reside)|(?:'re|\s+are)\s+(?:living|based)|(?:'ve|\s+have)?\s+moved)"
        rf"\s+(?:in|to)\s+{_VALUE}",
        HOME,
    ),
    _statement(rf"\byour\s+(?P<attr>{_ATTR}){_IS}{_VALUE}"),
)


def _third_person(subject: str, possessive: str) -> tuple[_StatementPattern, ...]:
    return (
        _statement(rf"\b{possessive}\s+(?P<attr>{_ATTR}){_IS}{_VALUE}"),
        _statement(rf"\b{subject}\s+{_CALLED}\s+{_VALUE}", "name"),
        _statement(rf"\b{subject}\s+{_LIVES}\s+(?:in|to)\s+{_VALUE}", HOME),
        _statement(rf"\b{subject}\s+{_ORIGIN_VERB}\s+{_VALUE}", ORIGIN),
    )


_THIRD_PERSON_EXPLICIT = _third_person(_USER, rf"{_USER}'s")
_THIRD_PERSON_PRONOUN = _third_person(_PRONOUN, _POSSESSIVE_PRONOUN)
_GENERAL = (
    _statement(rf"\bremember\s+(?:that\s+)?(?P<subject>(?:(?:the|my)\s+)?{_ATTR}){_IS}{_VALUE}"),
    _statement(rf"\b(?P<subject>the\s+{_ATTR}){_IS}{_VALUE}"),
)

Perspective = Literal["user", "assistant", "system", "reported"]
# Whose point of view a text is written from decides which phrasings are about the user: "my name"
# from the user, "your name" from the assistant, "their name" only in a system summary.
_PATTERNS: dict[str, tuple[_StatementPattern, ...]] = {
    "user": _FIRST_PERSON + _THIRD_PERSON_EXPLICIT + _GENERAL,
    "assistant": _SECOND_PERSON + _THIRD_PERSON_EXPLICIT + _GENERAL,
    "system": _THIRD_PERSON_EXPLICIT + _THIRD_PERSON_PRONOUN + _GENERAL,
    "reported": _FIRST_PERSON + _THIRD_PERSON_EXPLICIT + _THIRD_PERSON_PRONOUN + _GENERAL,
}
_ROLE_PERSPECTIVE: dict[str, Perspective] = {
    "user": "user", "assistant": "assistant", "system": "system", "developer": "system",
}

# Words that start a new clause after a comma or a conjunction ("Alice and I live ...").
_CLAUSE_STARTERS = (
    r"(?:i|im|my|the|that|this|you|your|we|they|their|he|his|she|her|it|remember|call|please|what|whats"
    r"|where|who|do|did|can|could|tell|user|caller|customer|also)"
)
# Lines are whitespace-collapsed before splitting and a punctuation run only matches from its start: both
# keep this linear on pathological input (a run of 20k spaces or "!" would otherwise backtrack quadratically).
_CLAUSE_BREAK = re.compile(
    rf"(?<![.!?;])[.!?;]+(?=\s|$)|\s*,\s*(?:(?:and|but|so)\s+)?(?={_CLAUSE_STARTERS}\b)"
    rf"|\s+(?:and|but|so)\s+(?={_CLAUSE_STARTERS}\b)",
    re.IGNORECASE,
)
_SPEAKER_LINE = re.compile(
    r"^\s*(?P<speaker>user|customer|caller|human|me|assistant|agent|ai|bot|model)\s*:\s*(?P<rest>.*)$",
    re.IGNORECASE,
)
_USER_SPEAKERS = frozenset({"user", "customer", "caller", "human", "me"})
_ECHO_PREFIX = re.compile(r"^\s*you\s+said\s*:?\s*", re.IGNORECASE)
_REPORTED_SPEECH = re.compile(
    rf"\b{_USER}\s+(?:said|says|told\s+(?:you|me|us|the\s+assistant)|mentioned|stated|explained)"
    r"(?:\s+that)?\s*:?\s*",
    re.IGNORECASE,
)
_QUOTES = "\"'\u201c\u201d\u2018\u2019`"
_VALUE_FILLERS = (
    "now", "actually", "please", "thanks", "thank you", "by the way", "btw", "too", "though", "again",
    "anymore", "ok", "okay", "then",
)
_QUESTION_FILLERS = ("again", "please", "now", "then", "by the way", "btw", "anymore", "still")


def _strip_trailing_words(text: str, words: Sequence[str], separators: str = " ,") -> str:
    """Drop trailing filler words ("Paris now" -> "Paris"); a backwards scan, linear unlike a regex here."""
    lowered = text.lower()
    end = len(text)
    while True:
        while end and lowered[end - 1] in separators:
            end -= 1
        for word in words:
            start = end - len(word)
            if start > 0 and lowered[start - 1] in separators and lowered.startswith(word, start):
                end = start
                break
        else:
            return text[:end]


def _clean_value(raw: str) -> str:
    value = raw.strip().strip(_QUOTES).lstrip(":").strip()
    value = _strip_trailing_words(value.rstrip(".,!?;:").strip(), _VALUE_FILLERS)
    return value.strip().strip(_QUOTES).rstrip(".,!?;:").strip()


def _normalise_apostrophes(text: str) -> str:
    return text.replace("\u2019", "'").replace("\u2018", "'")


def _clauses(text: str) -> list[str]:
    return [
        clause
        for line in text.splitlines()
        for clause in _CLAUSE_BREAK.split(_collapse(line))
        if clause and not clause.isspace()
    ]


def _statements_in_clause(clause: str, perspective: Perspective) -> _Fact | None:
    reported = _REPORTED_SPEECH.search(clause) if perspective in ("system", "assistant") else None
    if reported:
        clause, perspective = clause[reported.end():], "reported"
    for pattern in _PATTERNS[perspective]:
        match = pattern.regex.search(clause)
        if not match:
            continue
        raw_value = match.group("value")
        value = pattern.value_filter(raw_value) if pattern.value_filter else _clean_value(raw_value)
        if not value:
            continue
        groups = match.groupdict()
        kind: FactKind = "attribute"
        if pattern.key is not None:
            key = label = pattern.key
        elif groups.get("attr") is not None:
            label = _collapse(groups["attr"])
            key = _canonical_attribute(label)
        else:
            label = _collapse(groups["subject"])
            key, kind = _canonical_subject(label)
            if kind == "attribute":
                label = label.partition(" ")[2]  # "my code" -> "code"
        if key:
            return _Fact(key, value, kind, label)
    return None


@functools.lru_cache(maxsize=16384)
def _facts_in_text(text: str, perspective: Perspective) -> tuple[_Fact, ...]:
    """Statements in one message, in order. Cached: a session re-reads the same items every response."""
    facts: list[_Fact] = []
    for line in _normalise_apostrophes(text).splitlines():
        line_perspective = perspective
        speaker = _SPEAKER_LINE.match(line)
        if speaker:  # a replayed transcript pasted into one message
            line = speaker.group("rest")
            line_perspective = "user" if speaker.group("speaker").lower() in _USER_SPEAKERS else "assistant"
        if line_perspective == "assistant":
            echoed = _ECHO_PREFIX.match(line)
            if echoed:  # the model's own echo quotes the user
                line, line_perspective = line[echoed.end():], "user"
        for clause in _clauses(line):
            fact = _statements_in_clause(clause, line_perspective)
            if fact is not None:
                facts.append(fact)
    return tuple(facts)


def _collect_facts(items: Sequence[Any], instructions: str) -> dict[str, _Fact]:
    facts: dict[str, _Fact] = {}
    sources: list[tuple[str, Perspective]] = [(instructions, "system")] if instructions else []
    for item in items:
        if not _is_mapping(item):
            continue
        perspective = _ROLE_PERSPECTIVE.get(_role(item) or "")
        if perspective is not None:
            sources.append((item_text(item), perspective))
    for text, perspective in sources:
        if text:
            for fact in _facts_in_text(text, perspective):
                facts[fact.key] = fact  # the latest statement wins
    return facts


def known_facts(conversation: Sequence[Mapping[str, Any]], instructions: str = "") -> dict[str, str]:
    """The facts the model would recall, by canonical key ("name", "favourite colour", "home", "origin",
    "the wifi password"), latest statement winning. For checkers and script authors."""
    items = _as_items(conversation)
    text = instructions if isinstance(instructions, str) else ""
    return {key: fact.value for key, fact in _collect_facts(items, text).items()}


# --------------------------------------------------------------------------------------------------
# Questions
# --------------------------------------------------------------------------------------------------

QuestionKind = Literal["attribute", "home", "origin", "subject", "known_subject", "everything"]


@dataclass(frozen=True)
class _QuestionPattern:
    regex: re.Pattern[str]
    kind: QuestionKind
    fixed_attribute: str | None = None


def _question(pattern: str, kind: QuestionKind, fixed_attribute: str | None = None) -> _QuestionPattern:
    # Questions must reach the end of their clause, so "what is my name and ..." is split first.
    return _QuestionPattern(re.compile(pattern + r"$", re.IGNORECASE), kind, fixed_attribute)


_WHAT_IS = r"\bwhat(?:'s|s|\s+is|\s+was|\s+are|\s+were)"
_KNOW = (
    r"(?:\b(?:do|did|can|could)\s+you\s+(?:\w+\s+)?)?"
    r"\b(?:know|remember|recall|tell\s+me|remind\s+me(?:\s+of)?)"
)
_QUESTIONS = (
    _question(
        r"\b(?:do|did)\s+you\s+(?:\w+\s+)?(?:remember|know|recall)\s+(?:me|anything(?:\s+about\s+me)?"
        r"|everything|what\s+i\s+(?:told|said)(?:\s+(?:to\s+)?you)?)"
        r"|\bwhat\s+do\s+you\s+(?:know|remember)\s+about\s+me",
        "everything",
    ),
    _question(r"\bwho\s+(?:am\s+i|i\s+am)", "attribute", "name"),
    _question(r"\bwhat\s+do\s+you\s+call\s+me", "attribute", "name"),
    _question(r"\bwhere\s+(?:do\s+|did\s+)?i\s+(?:live|stay|reside)|\bwhere\s+(?:am\s+i|i\s+am|i'm)\s+"
              r"(?:living|based)", "home"),
    _question(r"\bwhere\s+(?:am\s+i|i\s+am|i'm|do\s+i\s+come|i\s+come)\s+(?:originally\s+)?from", "origin"),
    _question(rf"{_WHAT_IS}\s+my\s+(?P<attr>{_ATTR})", "attribute"),
    _question(rf"{_KNOW}\s+(?:what\s+)?my\s+(?P<attr>{_ATTR})(?:\s+(?:is|was|are|were))?", "attribute"),
    _question(rf"\bwhat\s+did\s+i\s+(?:say|tell\s+you)\s+my\s+(?P<attr>{_ATTR})\s+(?:is|was|are|were)",
              "attribute"),
    _question(rf"{_WHAT_IS}\s+(?P<subject>the\s+{_ATTR})", "subject"),
    _question(rf"{_KNOW}\s+(?:what\s+)?(?P<subject>the\s+{_ATTR})(?:\s+(?:is|was|are|were))?", "subject"),
    _question(rf"{_WHAT_IS}\s+(?P<subject>{_ATTR})", "known_subject"),
)


def _answer_question(clause: str, facts: Mapping[str, _Fact]) -> str | None:
    clause = _strip_trailing_words(clause.rstrip(" .!?,;:"), _QUESTION_FILLERS).rstrip(" .!?,;:")
    for pattern in _QUESTIONS:
        match = pattern.regex.search(clause)
        if not match:
            continue
        if pattern.kind == "everything":
            return " ".join(_fact_reply(fact) for fact in facts.values()) or NOTHING_REMEMBERED_REPLY
        if pattern.kind == "home":
            return home_reply(_value(facts, HOME))
        if pattern.kind == "origin":
            return origin_reply(_value(facts, ORIGIN))
        if pattern.kind == "attribute":
            attribute = pattern.fixed_attribute or match.group("attr")
            return attribute_reply(attribute, _value(facts, _canonical_attribute(attribute)))
        subject = match.group("subject")
        value = _value(facts, _canonical_subject(subject)[0])
        if pattern.kind == "known_subject" and value is None:
            continue  # "what is love?" is not a fact question unless a fact says so
        return subject_reply(subject, value)
    return None


def _value(facts: Mapping[str, _Fact], key: str) -> str | None:
    fact = facts.get(key)
    return fact.value if fact is not None else None


def _fact_reply(fact: _Fact) -> str:
    if fact.kind == "subject":
        return subject_reply(fact.label, fact.value)
    if fact.key == HOME:
        return home_reply(fact.value)
    if fact.key == ORIGIN:
        return origin_reply(fact.value)
    return attribute_reply(fact.label, fact.value)


def _recall_reply(user_text: str, facts: Mapping[str, _Fact]) -> str:
    answers = []
    for clause in _clauses(_normalise_apostrophes(user_text)):
        answer = _answer_question(clause, facts)
        if answer is not None:
            answers.append(answer)
    return " ".join(answers) if answers else echo_reply(user_text)


# --------------------------------------------------------------------------------------------------
# Script
# --------------------------------------------------------------------------------------------------


class ScriptError(ValueError):
    """A script file or mapping that cannot be used; the message says where."""


def _check_template(template: str, where: str) -> str:
    try:
        _TemplateFormatter({}).format(template)
    except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
        raise ScriptError(f"{where}: bad template {template!r}: {exc}") from exc
    return template


def _template_field(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ScriptError(f"{where}: expected a string, got {type(value).__name__}")
    return _check_template(str(value), where)


def _check_arguments_templates(value: Any, where: str) -> None:
    if isinstance(value, str):  # strings inside a mapping/list; a top-level string is never templated
        _check_template(value, where)
    elif isinstance(value, Mapping):
        for key, inner in value.items():
            _check_arguments_templates(inner, f"{where}.{key}")
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            _check_arguments_templates(inner, f"{where}[{index}]")


@dataclass(frozen=True)
class ToolCallTemplate:
    name: str
    arguments: Any = None  # a mapping/list whose strings are templates, or a JSON string sent verbatim


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern[str] | None = None
    turn: int | None = None
    say: str | None = None
    tool_calls: tuple[ToolCallTemplate, ...] = ()
    after_tool: str | None = None
    mcp_call: McpCallTemplate | None = None


@dataclass(frozen=True)
class McpCallTemplate:
    name: str
    server_label: str | None = None  # None: the first listed server that offers the tool
    arguments: Any = None  # as a tool call's
    output: str | None = None  # a template
    error: str | None = None  # a template; the call fails


@dataclass(frozen=True)
class McpToolSpec:
    """One tool a scripted MCP server lists (the SDK's `RealtimeMcpListTools.Tool`)."""

    name: str
    input_schema: Any
    description: str | None = None

    def listed(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema,
            "annotations": None,
        }


def _parse_mcp_call(data: Any, where: str) -> McpCallTemplate:
    if not isinstance(data, Mapping):
        raise ScriptError(f"{where}: an MCP call is a mapping: 'name', 'arguments', 'output' or 'error'")
    unknown = set(data) - {"name", "server_label", "arguments", "output", "error"}
    if unknown:
        raise ScriptError(f"{where}: unknown keys {sorted(unknown)}")
    call = _parse_tool_call({k: data[k] for k in ("name", "arguments") if k in data}, where)
    label = data.get("server_label")
    if label is not None and (not isinstance(label, str) or not label):
        raise ScriptError(f"{where}.server_label: expected a non-empty string")
    if "output" in data and "error" in data:
        raise ScriptError(f"{where}: an MCP call has an 'output' or an 'error', not both")
    output = _template_field(data["output"], f"{where}.output") if data.get("output") is not None else None
    error = _template_field(data["error"], f"{where}.error") if data.get("error") is not None else None
    return McpCallTemplate(call.name, label, call.arguments, output, error)


def _parse_mcp_servers(data: Any) -> dict[str, tuple[McpToolSpec, ...]]:
    if not isinstance(data, Mapping):
        raise ScriptError("mcp_servers: expected a mapping of server_label to {tools: [...]}")
    servers: dict[str, tuple[McpToolSpec, ...]] = {}
    for label, server in data.items():
        where = f"mcp_servers.{label}"
        if not isinstance(server, Mapping) or set(server) - {"tools"}:
            raise ScriptError(f"{where}: expected a mapping with 'tools'")
        tools = server.get("tools") or []
        if not isinstance(tools, list):
            raise ScriptError(f"{where}.tools: expected a list")
        specs = []
        for index, tool in enumerate(tools):
            at = f"{where}.tools[{index}]"
            if not isinstance(tool, Mapping) or set(tool) - {"name", "description", "input_schema"}:
                raise ScriptError(f"{at}: expected a mapping with 'name', 'description', 'input_schema'")
            name, description = tool.get("name"), tool.get("description")
            if not isinstance(name, str) or not name:
                raise ScriptError(f"{at}.name: expected a non-empty string")
            if description is not None and not isinstance(description, str):
                raise ScriptError(f"{at}.description: expected a string")
            specs.append(McpToolSpec(name, tool.get("input_schema") or {"type": "object"}, description))
        servers[str(label)] = tuple(specs)
    return servers


def _parse_tool_call(data: Any, where: str) -> ToolCallTemplate:
    if not isinstance(data, Mapping):
        raise ScriptError(f"{where}: a tool call is a mapping with 'name' and 'arguments'")
    unknown = set(data) - {"name", "arguments"}
    if unknown:
        raise ScriptError(f"{where}: unknown keys {sorted(unknown)}")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ScriptError(f"{where}: 'name' must be a non-empty string")
    arguments = data.get("arguments")
    if arguments is not None and not isinstance(arguments, (str, Mapping, list)):
        raise ScriptError(f"{where}: 'arguments' must be a mapping, a list or a JSON string")
    if isinstance(arguments, (Mapping, list)):
        try:
            json.dumps(arguments)
        except (TypeError, ValueError) as exc:  # e.g. an unquoted YAML date
            raise ScriptError(f"{where}.arguments: not representable as JSON: {exc}") from exc
        _check_arguments_templates(arguments, f"{where}.arguments")
    return ToolCallTemplate(name, arguments)


def _parse_rule(data: Any, where: str) -> Rule:
    if not isinstance(data, Mapping):
        raise ScriptError(f"{where}: a rule is a mapping")
    unknown = set(data) - {"match", "turn", "say", "tool_call", "tool_calls", "mcp_call", "after_tool"}
    if unknown:
        raise ScriptError(f"{where}: unknown keys {sorted(unknown)}")
    pattern = None
    if "match" in data:
        if not isinstance(data["match"], str):
            raise ScriptError(f"{where}.match: expected a regex string")
        try:
            pattern = re.compile(data["match"], re.IGNORECASE)
        except re.error as exc:
            raise ScriptError(f"{where}.match: bad regex {data['match']!r}: {exc}") from exc
    turn = data.get("turn")
    if turn is not None and (isinstance(turn, bool) or not isinstance(turn, int) or turn < 0):
        raise ScriptError(f"{where}.turn: expected a non-negative integer")
    say = _template_field(data["say"], f"{where}.say") if data.get("say") is not None else None
    tool_calls: list[ToolCallTemplate] = []
    if data.get("tool_call") is not None:
        tool_calls.append(_parse_tool_call(data["tool_call"], f"{where}.tool_call"))
    if data.get("tool_calls") is not None:
        if not isinstance(data["tool_calls"], list):
            raise ScriptError(f"{where}.tool_calls: expected a list")
        tool_calls += [_parse_tool_call(call, f"{where}.tool_calls[{index}]")
                       for index, call in enumerate(data["tool_calls"])]
    mcp_call = _parse_mcp_call(data["mcp_call"], f"{where}.mcp_call") if data.get("mcp_call") else None
    after_tool = None
    if data.get("after_tool") is not None:
        if not tool_calls and mcp_call is None:
            raise ScriptError(f"{where}.after_tool: only a rule with a tool call can have after_tool")
        after_tool = _template_field(data["after_tool"], f"{where}.after_tool")
    if say is None and not tool_calls and mcp_call is None:
        raise ScriptError(f"{where}: a rule needs 'say' or 'tool_call' (or 'mcp_call')")
    return Rule(pattern, turn, say, tuple(tool_calls), after_tool, mcp_call)


@dataclass(frozen=True)
class Script:
    replies: tuple[Rule, ...] = ()
    transcripts: tuple[str | None, ...] = ()
    default: str = DEFAULT_RECALL  # "recall", "echo" or a fixed reply template
    require_declared_tools: bool = True
    mcp_servers: Mapping[str, tuple[McpToolSpec, ...]] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Script:
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ScriptError("a script is a mapping with 'replies', 'transcripts' and/or 'default'")
        unknown = set(data) - {"replies", "transcripts", "default", "require_declared_tools", "mcp_servers"}
        if unknown:
            raise ScriptError(f"unknown script keys {sorted(unknown)}")
        replies = data.get("replies") or []
        if not isinstance(replies, list):
            raise ScriptError("replies: expected a list of rules")
        transcripts = data.get("transcripts") or []
        if not isinstance(transcripts, list) or not all(t is None or isinstance(t, str) for t in transcripts):
            raise ScriptError("transcripts: expected a list of strings (null: unheard)")
        default = data.get("default")
        default = DEFAULT_RECALL if default is None else _template_field(default, "default")
        require_declared_tools = data.get("require_declared_tools", True)
        if not isinstance(require_declared_tools, bool):
            raise ScriptError("require_declared_tools: expected true or false")
        return cls(
            replies=tuple(_parse_rule(rule, f"replies[{index}]") for index, rule in enumerate(replies)),
            transcripts=tuple(transcripts),
            default=default,
            require_declared_tools=require_declared_tools,
            mcp_servers=_parse_mcp_servers(data.get("mcp_servers") or {}),
        )

    @classmethod
    def load(cls, path: str | PathLike[str]) -> Script:
        with open(path, encoding="utf-8") as file:
            try:
                data = yaml.safe_load(file)
            except yaml.YAMLError as exc:
                raise ScriptError(f"{path}: not valid YAML: {exc}") from exc
        try:
            return cls.from_dict(data)
        except ScriptError as exc:
            raise ScriptError(f"{path}: {exc}") from exc


class _Facts(Mapping[str, str]):
    """Template view of the facts: keys are canonicalised, so {favorite color} finds 'favourite colour'."""

    def __init__(self, facts: Mapping[str, _Fact]) -> None:
        self._facts = facts

    def __getitem__(self, key: str) -> str:
        fact = self._facts.get(key) or self._facts.get(_canonical_subject(key)[0])
        if fact is None:
            raise KeyError(key)
        return fact.value

    def __iter__(self) -> Iterator[str]:
        return iter(self._facts)

    def __len__(self) -> int:
        return len(self._facts)


class _TemplateFormatter(string.Formatter):
    """str.format where positional fields are regex groups and unknown fields render as ''."""

    def __init__(self, names: Mapping[str, str], groups: Sequence[str | None] = ()) -> None:
        self._names = names
        self._groups = groups

    def get_value(self, key: int | str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        if isinstance(key, int):
            group = self._groups[key] if key < len(self._groups) else None
            return group or ""
        try:
            return self._names[key]
        except KeyError:
            return ""


class _TemplateNames(Mapping[str, str]):
    """Reserved names first ({text}, {output}), then named regex groups, then recalled facts."""

    def __init__(self, *layers: Mapping[str, str]) -> None:
        self._layers = layers

    def __getitem__(self, key: str) -> str:
        for layer in self._layers:
            try:
                value = layer[key]
            except KeyError:
                continue
            if value is not None:
                return value
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter({key for layer in self._layers for key in layer})

    def __len__(self) -> int:
        return len(set(self))


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


def _as_items(conversation: Any) -> Sequence[Any]:
    if isinstance(conversation, (list, tuple)):
        return conversation
    if isinstance(conversation, (str, bytes, Mapping)) or not isinstance(conversation, Iterable):
        return ()
    try:
        return tuple(conversation)
    except Exception:  # an iterable that fails while iterating is just no conversation
        return ()


def _declared_tool_names(tools: Any) -> frozenset[str]:
    names = set()
    if isinstance(tools, (list, tuple)):
        for tool in tools:
            if not isinstance(tool, Mapping):
                continue
            name = tool.get("name")
            function = tool.get("function")  # chat-completions shape
            if not isinstance(name, str) and isinstance(function, Mapping):
                name = function.get("name")
            if isinstance(name, str):
                names.add(name)
    return frozenset(names)


class _Turn:
    """What one reply() call looks at; facts are parsed only if something needs them."""

    def __init__(self, items: Sequence[Any], instructions: str) -> None:
        self.items = items
        self.instructions = instructions
        self.last_user_index: int | None = None
        self.user_turn = -1
        user_messages = 0
        for index, item in enumerate(items):
            if _is_mapping(item) and _role(item) == "user":
                self.last_user_index = index
                user_messages += 1
        self.user_turn = user_messages - 1
        last_user = items[self.last_user_index] if self.last_user_index is not None else None
        self.user_raw_text = item_text(last_user) if last_user is not None else ""  # clause breaks kept
        self.user_text = _collapse(self.user_raw_text)

    @cached_property
    def facts(self) -> dict[str, _Fact]:
        return _collect_facts(self.items, self.instructions)

    def trailing_tool_outputs(self) -> list[str]:
        outputs: list[str] = []
        for item in reversed(self.items):
            kind = item.get("type") if _is_mapping(item) else None
            if kind == "function_call_output":
                outputs.append(_as_text(item.get("output")).strip())
            elif kind == "mcp_call" and (item.get("output") is not None or item.get("error")):
                error = item.get("error")
                message = error.get("message") if _is_mapping(error) else None
                outputs.append(_as_text(message if message is not None else item.get("output")).strip())
            else:
                break
        return outputs[::-1]

    def approval_answered(self) -> tuple[Mapping[str, Any], Mapping[str, Any]] | None:
        """(the approval request, its response) when the last item answers an MCP approval request."""
        last = self.items[-1] if self.items else None
        if not (_is_mapping(last) and last.get("type") == "mcp_approval_response"):
            return None
        wanted = last.get("approval_request_id")
        for item in self.items:
            if _is_mapping(item) and item.get("type") == "mcp_approval_request" and item.get("id") == wanted:
                return item, last
        return None


class ScriptedModel:
    """Deterministic replies to user turns; see the module docstring for behaviour and script format."""

    def __init__(self, script: Script | None = None, *, seed: int = 0) -> None:
        self.script = script if script is not None else Script()
        self.seed = seed

    def reply(
        self,
        conversation: Sequence[Mapping[str, Any]],
        *,
        instructions: str = "",
        tools: Sequence[Mapping[str, Any]] = (),
        response_index: int = 0,
        mcp_tools: Mapping[str, Collection[str]] | None = None,
    ) -> Reply:
        """The reply to the conversation. `mcp_tools`: the tools each MCP server (by label) has listed and
        allows; a rule calls an MCP tool only when it is there."""
        turn = _Turn(_as_items(conversation), instructions if isinstance(instructions, str) else "")
        declared_tools = _declared_tool_names(tools)
        available = mcp_tools or {}
        answered = turn.approval_answered()
        if answered is not None:
            return self._after_approval(turn, *answered, declared_tools, available)
        outputs = turn.trailing_tool_outputs()
        if outputs:
            return Reply(self._resume_after_tools(turn, outputs, declared_tools, available))
        if turn.last_user_index is None:
            return Reply(GREETING_REPLY)
        selected = self._select_rule(turn, declared_tools, available)
        if selected is None:
            return Reply(self._default_reply(turn))
        rule, match = selected
        formatter = self._formatter(turn, match)
        text = self._render(formatter, rule.say) if rule.say is not None else ""
        calls = tuple(
            ToolCall(call.name, self._render_arguments(formatter, call.arguments),
                     self._call_id(turn.user_turn, response_index, position))
            for position, call in enumerate(rule.tool_calls)
        )
        mcp_calls: tuple[McpCall, ...] = ()
        label = _mcp_server_for(rule.mcp_call, available) if rule.mcp_call is not None else None
        if rule.mcp_call is not None and label is not None:
            arguments = self._render_arguments(formatter, rule.mcp_call.arguments)
            mcp_calls = (self._mcp_result(formatter, rule.mcp_call, label, arguments),)
        return Reply(text, calls, mcp_calls)

    def list_mcp_tools(self, server_label: str) -> list[dict[str, Any]]:
        """What listing an MCP server's tools returns: the script's tools (none for an unscripted label)."""
        return [tool.listed() for tool in self.script.mcp_servers.get(server_label, ())]

    def transcribe(self, user_audio_turn: int) -> str | None:
        """Transcript for the Nth (0-based) user audio item of a session, from the script;
        None if unscripted."""
        if isinstance(user_audio_turn, bool) or not isinstance(user_audio_turn, int):
            return None
        if 0 <= user_audio_turn < len(self.script.transcripts):
            return self.script.transcripts[user_audio_turn]
        return None

    # -- internals ----------------------------------------------------------------------------------

    def _select_rule(
        self,
        turn: _Turn,
        declared_tools: frozenset[str],
        mcp_tools: Mapping[str, Collection[str]],
    ) -> tuple[Rule, re.Match[str] | None] | None:
        for rule in self.script.replies:
            if rule.turn is not None and rule.turn != turn.user_turn:
                continue
            if self.script.require_declared_tools and any(
                call.name not in declared_tools for call in rule.tool_calls
            ):
                continue
            if rule.mcp_call is not None and _mcp_server_for(rule.mcp_call, mcp_tools) is None:
                continue  # the model cannot call a tool no listed server offers
            match = None
            if rule.pattern is not None:
                match = rule.pattern.search(turn.user_text)
                if match is None:
                    continue
            return rule, match
        return None

    def _default_reply(self, turn: _Turn) -> str:
        default = self.script.default
        if default == DEFAULT_RECALL:
            return _recall_reply(turn.user_raw_text, turn.facts) if turn.user_text else UNHEARD_REPLY
        if default == DEFAULT_ECHO:
            return echo_reply(turn.user_text)
        return self._render(self._formatter(turn, None), default)

    def _resume_after_tools(
        self,
        turn: _Turn,
        outputs: list[str],
        declared_tools: frozenset[str],
        mcp_tools: Mapping[str, Collection[str]],
    ) -> str:
        output = "; ".join(outputs)
        # The rule that made the call is found again: selection is deterministic for the same user turn.
        selected = (
            self._select_rule(turn, declared_tools, mcp_tools) if turn.last_user_index is not None else None
        )
        if selected is not None and selected[0].after_tool is not None:
            rule, match = selected
            return self._render(self._formatter(turn, match, output=output), rule.after_tool or "")
        return tool_result_reply(output)

    def _after_approval(
        self,
        turn: _Turn,
        request: Mapping[str, Any],
        answer: Mapping[str, Any],
        declared_tools: frozenset[str],
        mcp_tools: Mapping[str, Collection[str]],
    ) -> Reply:
        """An answered MCP approval request: the approved call runs; a declined one is not made."""
        name, label = str(request.get("name", "")), str(request.get("server_label", ""))
        if not answer.get("approve"):
            return Reply(mcp_declined_reply(name))
        arguments = _as_text(request.get("arguments")) or "{}"
        template = McpCallTemplate(name)
        formatter = self._formatter(turn, None)
        selected = None
        if turn.last_user_index is not None:
            selected = self._select_rule(turn, declared_tools, mcp_tools)
        if selected is not None and selected[0].mcp_call is not None and selected[0].mcp_call.name == name:
            template, formatter = selected[0].mcp_call, self._formatter(turn, selected[1])
        call = self._mcp_result(formatter, template, label, arguments)
        return Reply("", mcp_calls=(dataclasses.replace(call, approval_request_id=str(request.get("id"))),))

    def _mcp_result(
        self, formatter: _TemplateFormatter, template: McpCallTemplate, label: str, arguments: str
    ) -> McpCall:
        if template.error is not None:
            return McpCall(label, template.name, arguments, error=self._render(formatter, template.error))
        output = self._render(formatter, template.output) if template.output is not None else ""
        return McpCall(label, template.name, arguments, output=output)

    def _formatter(self, turn: _Turn, match: re.Match[str] | None, *, output: str = "") -> _TemplateFormatter:
        reserved = {"text": turn.user_text, "output": output}
        named = {k: v for k, v in match.groupdict().items() if v is not None} if match else {}
        groups: tuple[str | None, ...] = (match.group(0), *match.groups()) if match else (turn.user_text,)
        # Facts are parsed lazily: only a template that names one pays for it.
        lazy_facts = _LazyFacts(turn)
        return _TemplateFormatter(_TemplateNames(reserved, named, lazy_facts), groups)

    @staticmethod
    def _render(formatter: _TemplateFormatter, template: str) -> str:
        try:
            return formatter.format(template)
        except (ValueError, KeyError, IndexError, AttributeError, TypeError):
            return template  # templates are checked on load; a late surprise must not break a response

    def _render_arguments(self, formatter: _TemplateFormatter, arguments: Any) -> str:
        if arguments is None:
            return "{}"
        if isinstance(arguments, str):
            return arguments  # verbatim, possibly malformed on purpose to test the client
        return json.dumps(self._render_values(formatter, arguments), ensure_ascii=False)

    def _render_values(self, formatter: _TemplateFormatter, value: Any) -> Any:
        if isinstance(value, str):
            return self._render(formatter, value)
        if isinstance(value, Mapping):
            return {str(key): self._render_values(formatter, inner) for key, inner in value.items()}
        if isinstance(value, list):
            return [self._render_values(formatter, inner) for inner in value]
        return value

    def _call_id(self, user_turn: int, response_index: int, position: int) -> str:
        digest = hashlib.sha256(f"{self.seed}:{user_turn}:{response_index}:{position}".encode()).hexdigest()
        return f"call_{digest[:16]}"


def _mcp_server_for(template: McpCallTemplate, mcp_tools: Mapping[str, Collection[str]]) -> str | None:
    """The label of the listed MCP server that offers the template's tool (its own label, if it names one)."""
    if template.server_label is not None:
        return template.server_label if template.name in mcp_tools.get(template.server_label, ()) else None
    return next((label for label, names in mcp_tools.items() if template.name in names), None)


class _LazyFacts(Mapping[str, str]):
    def __init__(self, turn: _Turn) -> None:
        self._turn = turn

    @cached_property
    def _facts(self) -> _Facts:
        return _Facts(self._turn.facts)

    def __getitem__(self, key: str) -> str:
        return self._facts[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._facts)

    def __len__(self) -> int:
        return len(self._facts)
