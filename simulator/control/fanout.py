"""One control API over several simulator processes: what each answered, merged into one answer.

`rtsim serve --workers N` runs N processes behind one port; a control request reaches whichever worker the
kernel hands the connection to, and that worker asks its peers (on their private control ports, with
`LOCAL_HEADER` so they answer for themselves only) and merges. `rtsim fault` / `sessions` / `history` given
several `--server` URLs (several hosts behind a load balancer) merge the same way. The merges are here,
once, for both.

- sessions, scheduled faults: the lists joined; each worker's entries carry its `worker` number.
- a fault: applied wherever its target lives. 404 only if no worker had the target; a session fault's
  `applied_to` joins every worker's sessions; scheduled ids (unique per worker) are joined with commas,
  and cancelling that joined id cancels every part.
- history: every worker's records ordered by wall-clock time, each with its `worker`; `since` is a `seq`
  of each worker's own history.
- summary: computed over the merged records, their `t` re-based on wall-clock time (the workers' own
  clocks start at different moments) and each `conn` qualified as `conn@worker` (separate simulators
  number their connections alike); `max_loop_lag_ms` is the largest of any worker.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from ..history import summarize

LOCAL_HEADER = "X-Rtsim-Local"  # set on a request a worker forwards to a peer: answer for yourself only

Answer = tuple[int, Any]  # (HTTP status, parsed JSON body, or text for JSON Lines)


def _ok(answers: list[Answer]) -> list[Any]:
    return [body for status, body in answers if status < 400]


def _refusal(answers: list[Answer]) -> Answer:
    """No worker accepted: a request error (the same on every worker) before a 'not here' 404."""
    return next(((s, b) for s, b in answers if s != 404), answers[0])


def merge_sessions(answers: list[Answer]) -> Answer:
    if not (ok := _ok(answers)):
        return _refusal(answers)
    return 200, {"sessions": [s for body in ok for s in body["sessions"]]}


def merge_scheduled(answers: list[Answer]) -> Answer:
    if not (ok := _ok(answers)):
        return _refusal(answers)
    return 200, {"scheduled": [s for body in ok for s in body["scheduled"]]}


def merge_fault(answers: list[Answer]) -> Answer:
    """One fault request as every worker answered it."""
    ok = _ok(answers)
    if not ok:
        return _refusal(answers)
    first = ok[0]
    if "scheduled" in first:
        return 201, {
            **first,
            "scheduled": ",".join(body["scheduled"] for body in ok),
            "applies_to": [s for body in ok for s in body["applies_to"]],
        }
    if first["scope"] == "server":
        return 200, first
    return 200, {**first, "applied_to": [s for body in ok for s in body["applied_to"]]}


def merge_first_success(answers: list[Answer]) -> Answer:
    """A request about one thing that lives on one worker (cancelling a scheduled fault, a keep-alive)."""
    return next(((s, b) for s, b in answers if s < 400), None) or _refusal(answers)


def merged_records(texts: list[tuple[int, str]]) -> list[dict[str, Any]]:
    """(worker number, its history as JSON Lines) → every record, tagged with its worker, by wall time."""
    records = [
        {**json.loads(line), "worker": worker}
        for worker, text in texts
        for line in text.splitlines()
        if line.strip()
    ]
    records.sort(key=lambda r: (r.get("wall", 0.0), r["worker"], r.get("seq", 0)))
    return records


def merge_history(texts: list[tuple[int, str]]) -> str:
    return "".join(json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in merged_records(texts))


def merge_summary(texts: list[tuple[int, str]], lags: list[float | None]) -> dict[str, Any]:
    records = merged_records(texts)
    base = records[0]["wall"] if records else 0.0
    # Separate simulators (several --server URLs) number their connections alike: qualify them by worker.
    rebased = [
        {
            **r,
            "t": round(r["wall"] - base, 6),
            **({"conn": f"{r['conn']}@{r['worker']}"} if "conn" in r else {}),
        }
        for r in records
    ]
    known = [lag for lag in lags if lag is not None]
    return {**summarize(rebased), "max_loop_lag_ms": max(known) if known else None}


class PeerClient:
    """Asks a worker's peers, on their private control ports, what they alone have (`LOCAL_HEADER`)."""

    TIMEOUT_SECONDS = 10.0

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None  # made on first use, inside the running loop

    async def ask(
        self, peers: list[tuple[int, str]], method: str, path_qs: str, body: bytes, headers: dict[str, str]
    ) -> list[tuple[int, int, str]]:
        """(worker, status, text) from every peer; a peer that does not answer counts as a 503."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.TIMEOUT_SECONDS))
        session = self._session

        async def one(worker: int, base_url: str) -> tuple[int, int, str]:
            root = base_url.removesuffix("/v1")
            try:
                async with session.request(
                    method, root + path_qs, data=body or None, headers={**headers, LOCAL_HEADER: "1"}
                ) as response:
                    return worker, response.status, await response.text()
            except (TimeoutError, aiohttp.ClientError) as exc:
                message = f"worker {worker} did not answer: {type(exc).__name__}"
                return worker, 503, json.dumps({"error": {"message": message, "type": "server_error"}})

        return list(await asyncio.gather(*(one(worker, url) for worker, url in peers)))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
