"""The record of what happened: one ordered list of plain dicts, in memory and optionally as JSON Lines.

Every record has `seq` (order), `t` (monotonic seconds since the history began), `wall` (epoch seconds)
and `kind`:

- `server` — the simulator started (`config`) or stopped (`max_loop_lag_ms`: its longest event-loop stall).
- `http` — a REST call: `method`, `path`, `status`, `key_id`, `reason`, `retry_after` (on a 429).
- `token` — an ephemeral token minted: `token_id`, `key_id`, `expires_at`, `usable_until`.
- `handshake` — a WebSocket/WebRTC connection attempt: `conn`, `path`, `transport`, `key_id`, `auth`
  (`api_key` | `ephemeral`), `token_id`, `credential` (a fingerprint of the key or token presented, so
  one expired token retried twice shows), `accepted`, `status`, `reason`, `retry_after` (on a 429).
- `session` — a session began: `session`, `conn`, `key_id`, `model`, `profile`, `expires_at`,
  `deadline_wall` (the exact moment of the cap; `expires_at` is whole seconds).
- `event` — one event: `dir` (`in` from the client, `out` to it), `session`, `event` (audio payloads are
  replaced by `audio_bytes`, so hours of audio stay small).
- `close` — a connection ended: `session`, `conn`, `code`, `reason`, `by` (`client` | `server` | `network`).
- `fault` — a fault was injected: `fault`, `target`, `params`, `route` (`control-api`, `plan:server`,
  `plan:connection`, `scenario`, `scenario:toxiproxy`), `applied_to` (sessions hit), `result`, and for a
  session fault one record per session hit, with `session` and `key_id`.
- `fault_scheduled` / `fault_cancelled` / `fault_skipped` — a fault set for later, called off, or whose
  target had gone when its moment came (`fault_id`, `reason`).
- `keep_alive` — the streaming keep-alive call reset a session's idle timer (`session`, `key_id`).
- `server_error` — a session's send path failed (`session`, `conn`, `key_id`, `where`, `error`); the
  session is then closed with 1011.
- `transport` — a WebRTC transport state change: `call_id`, `session`, `what` (`ice` | `connection` |
  `datachannel`), `state`. WebRTC `handshake`, `session` and `close` records carry `transport` (`webrtc` or
  `sideband`) and `call_id`; their `close.code` is None unless the session cap or a shutdown ended them.

Checkers and replay read these; `key_id` joins the records of one client identity across sessions.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

_AUDIO_FIELDS = {
    "response.output_audio.delta": "delta",
    "response.audio.delta": "delta",
    "input_audio_buffer.append": "audio",
}


# A string longer than this is recorded as its length ({"omitted_chars": n}); no real event's text comes near
# it (a whole 4096-token reply is about 16 K characters), while a client's 15 MB junk frame would otherwise
# be held in memory whole.
MAX_RECORDED_STRING = 64 * 1024
# What the in-memory history holds at most, estimated from the records' strings and fields.
DEFAULT_MAX_BYTES = 128 * 1024 * 1024


def summarize_event(event: dict[str, Any]) -> dict[str, Any]:
    """The event as recorded: audio payloads become their decoded byte count, huge strings their length."""
    return _summarized(event)[0]


def _summarized(event: dict[str, Any]) -> tuple[dict[str, Any], int]:
    field = _AUDIO_FIELDS.get(event.get("type", ""))  # type: ignore[arg-type]
    payload = event.get(field) if field is not None else None
    if isinstance(payload, str):
        event = {k: v for k, v in event.items() if k != field}
        event["audio_bytes"] = len(payload) * 3 // 4 - payload.count("=", -2)
    size = _flat_size(event)
    if size is not None:  # the hot path: an audio or transcript delta has nothing to shrink
        return event, size
    return _shrink(event)  # type: ignore[return-value]


def _flat_size(event: dict[str, Any]) -> int | None:
    """What `_shrink` would count for an event of scalars and short strings only (else None), in one pass
    and without copying."""
    size = 2
    for key, value in event.items():
        if isinstance(value, str):
            if len(value) > MAX_RECORDED_STRING:
                return None
            size += len(value) + 2
        elif isinstance(value, (dict, list)):
            return None
        else:
            size += 8
        size += len(str(key)) + 4
    return size


def _shrink(value: Any, depth: int = 0) -> tuple[Any, int]:
    """(value with every over-long string replaced by its length, its approximate size in bytes)."""
    if isinstance(value, str):
        if len(value) > MAX_RECORDED_STRING:
            return {"omitted_chars": len(value)}, 32
        return value, len(value) + 2
    if depth > 64:  # deeper than any real event: keep as is, counted by a rough constant
        return value, 64
    if isinstance(value, dict):
        size, changed, out = 2, False, {}
        for key, item in value.items():
            new, item_size = _shrink(item, depth + 1)
            changed = changed or new is not item
            out[key] = new
            size += item_size + len(str(key)) + 4
        return (out if changed else value), size
    if isinstance(value, list):
        size, changed, items = 2, False, []
        for item in value:
            new, item_size = _shrink(item, depth + 1)
            changed = changed or new is not item
            items.append(new)
            size += item_size + 1
        return (items if changed else value), size
    return value, 8


def record_size(entry: dict[str, Any]) -> int:
    """Approximate bytes of one record (what the history's byte bound counts)."""
    return _shrink(entry)[1]


class History:
    def __init__(
        self,
        record_dir: str | Path | None = None,
        *,
        name: str | None = None,
        limit: int | None = None,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
    ) -> None:
        # In memory, at most `limit` records and about `max_bytes` (the newest): a long load test must not
        # grow without bound. The JSON Lines file, when recording, keeps everything. `seq` keeps counting
        # across what was let go.
        self.records: list[dict[str, Any]] = []
        self.limit = limit
        self.max_bytes = max_bytes
        self.bytes = 0  # approximate size of `records`
        self._sizes: list[int] = []
        self.first_seq = 0
        # Called with every new record: how a scenario follows its client live (event-relative faults).
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.path: Path | None = None
        self._file: IO[str] | None = None
        if record_dir is not None:
            directory = Path(record_dir)
            directory.mkdir(parents=True, exist_ok=True)
            if name is not None:
                self.path = directory / name
                self._file = self.path.open("a", encoding="utf-8")
            else:  # one new file per server: two started in the same second never share one
                stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self.started_wall))
                while self._file is None:
                    self.path = directory / f"history-{stamp}-{os.getpid()}-{secrets.token_hex(3)}.jsonl"
                    with contextlib.suppress(FileExistsError):
                        self._file = self.path.open("x", encoding="utf-8")

    def now(self) -> float:
        return time.monotonic() - self.started

    def record(self, kind: str, **fields: Any) -> dict[str, Any]:
        return self._record(kind, None, fields)

    def _record(self, kind: str, size: int | None, fields: dict[str, Any]) -> dict[str, Any]:
        entry = {
            "seq": self.first_seq + len(self.records),
            "t": round(self.now(), 6),
            "wall": round(time.time(), 6),
            "kind": kind,
            **fields,
        }
        self.records.append(entry)
        if size is None:
            size = record_size(entry)
        self._sizes.append(size)
        self.bytes += size
        dropped = 0
        if self.limit is not None and len(self.records) > self.limit + self.limit // 4:
            dropped = len(self.records) - self.limit  # trimmed in batches: amortised O(1) per record
        if self.max_bytes is not None and self.bytes > self.max_bytes:
            target, freed = self.bytes - self.max_bytes * 3 // 4, 0
            while dropped < len(self.records) - 1 and freed < target:
                freed += self._sizes[dropped]
                dropped += 1
        if dropped:
            self.bytes -= sum(self._sizes[:dropped])
            del self.records[:dropped]
            del self._sizes[:dropped]
            self.first_seq += dropped
        for listener in self.listeners:
            listener(entry)
        if self._file is not None:
            self._file.write(json.dumps(entry, separators=(",", ":"), default=str) + "\n")
        return entry

    def event(
        self, direction: str, session: str | None, event: dict[str, Any], *, encoded_size: int | None = None
    ) -> None:
        """One event in or out. `encoded_size`: the length of the event as sent (the send path has it): an
        event without an audio payload and no longer than any string we keep is then recorded as it is,
        with that as its size, without walking it."""
        if (
            encoded_size is not None
            and encoded_size <= MAX_RECORDED_STRING
            and event.get("type") not in _AUDIO_FIELDS
        ):
            summary, size = event, encoded_size
        else:
            summary, size = _summarized(event)
        self._record("event", size + 96, {"dir": direction, "session": session, "event": summary})

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    # ---- queries ------------------------------------------------------------------------------------

    def select(
        self,
        *,
        kind: str | None = None,
        session: str | None = None,
        key_id: str | None = None,
        since_seq: int = 0,
    ) -> list[dict[str, Any]]:
        sessions_of_key = self.sessions_of(key_id) if key_id is not None else None
        out = []
        for entry in self.records[max(0, since_seq - self.first_seq) :]:
            if kind is not None and entry["kind"] != kind:
                continue
            if session is not None and entry.get("session") != session:
                continue
            if (
                key_id is not None
                and entry.get("key_id") != key_id
                and entry.get("session") not in sessions_of_key
            ):
                continue
            out.append(entry)
        return out

    def sessions_of(self, key_id: str) -> set[str]:
        return {e["session"] for e in self.records if e["kind"] == "session" and e.get("key_id") == key_id}

    def events(self, session: str, direction: str | None = None) -> Iterator[dict[str, Any]]:
        for entry in self.records:
            if entry["kind"] == "event" and entry["session"] == session and direction in (None, entry["dir"]):
                yield entry

    def to_jsonl(self, records: Iterable[dict[str, Any]] | None = None) -> str:
        return "".join(
            json.dumps(e, separators=(",", ":"), default=str) + "\n"
            for e in (self.records if records is None else records)
        )

    def summary(self) -> dict[str, Any]:
        return summarize(self.records)

    @staticmethod
    def load(path: str | Path) -> list[dict[str, Any]]:
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]


def summarize(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Per client identity (key id): its connections in order, how each ended, and the gaps between them.

    A gap is from one connection's close to the next connection's handshake: what the user of a voice app
    experiences as silence while the client reconnects.
    """
    identities: dict[str, dict[str, Any]] = {}
    open_conns: dict[str, dict[str, Any]] = {}
    key_of_session: dict[str, str] = {}
    for entry in records:
        kind = entry["kind"]
        key = entry.get("key_id")
        if kind == "handshake" and key is not None:
            who = identities.setdefault(key, {"key_id": key, "connections": [], "refused": 0, "faults": 0})
            if not entry.get("accepted"):
                who["refused"] += 1
                who["connections"].append(
                    {
                        "conn": entry["conn"],
                        "start": entry["t"],
                        "end": entry["t"],
                        "refused": entry.get("status"),
                        "reason": entry.get("reason"),
                    }
                )
                continue
            conn = {
                "conn": entry["conn"],
                "start": entry["t"],
                "end": None,
                "session": None,
                "code": None,
                "by": None,
            }
            who["connections"].append(conn)
            open_conns[entry["conn"]] = conn
        elif kind == "session" and entry.get("conn") in open_conns:
            open_conns[entry["conn"]]["session"] = entry["session"]
            key_of_session[entry["session"]] = key
        elif kind == "close" and entry.get("conn") in open_conns:
            conn = open_conns.pop(entry["conn"])
            conn.update(end=entry["t"], code=entry.get("code"), by=entry.get("by"), fault=entry.get("fault"))
        elif kind == "fault":
            hit = {key_of_session.get(session) for session in entry.get("applied_to") or ()}
            for who in hit | ({key} if key in identities else set()):
                if who in identities:
                    identities[who]["faults"] += 1
    for who in identities.values():
        conns = who["connections"]
        who["gaps"] = [
            {"after": a["conn"], "before": b["conn"], "seconds": round(b["start"] - a["end"], 6)}
            for a, b in itertools.pairwise(conns)
            if a["end"] is not None
        ]
        who["still_open"] = [c["session"] for c in conns if c.get("end") is None and c.get("session")]
    return {"identities": list(identities.values())}
