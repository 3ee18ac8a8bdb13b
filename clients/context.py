"""Context restore: what a new session is given so the conversation continues where it was.

A new session knows nothing. Both reference clients put the conversation back the same way: a `system`
message at `previous_item_id: "root"` summarising the older entries as `User: …` / `Assistant: …` lines, then
the most recent entries replayed verbatim as GA items — user `input_text`, assistant `output_text` (a
replayed `text` part is rejected and the context silently lost).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rtsim.clients.common import create_item, message_item

# (role, text): one entry of the conversation as a client remembers it; role is "user" or "assistant".
Entry = tuple[str, str]


def summary_text(older: Sequence[Entry]) -> str:
    """The system message that opens a restored session (a real agent might have a model write it)."""
    if not older:
        return "The conversation continues on a new connection; its most recent turns follow."
    lines = [f"{'User' if role == 'user' else 'Assistant'}: {text}" for role, text in older]
    return "Summary of the conversation so far, continued on a new connection:\n" + "\n".join(lines)


@dataclass(frozen=True)
class Restore:
    """The items that give a new session the conversation: the summary first, then the recent entries."""

    items: tuple[dict[str, Any], ...]
    summarized: int  # entries folded into the summary
    replayed: int  # entries replayed verbatim

    @classmethod
    def of(cls, entries: Sequence[Entry], *, keep: int, id_stem: str) -> Restore:
        """The restore for `entries`: the last `keep` verbatim, the older ones in the summary.

        Item ids are `{id_stem}_0` (the summary), `{id_stem}_1`, … so a client can tell its replays apart.
        """
        recent = list(entries[-keep:]) if keep else []
        older = entries[: len(entries) - len(recent)]
        items = [message_item("system", summary_text(older), f"{id_stem}_0")]
        items += [message_item(role, text, f"{id_stem}_{k}") for k, (role, text) in enumerate(recent, 1)]
        return cls(tuple(items), summarized=len(older), replayed=len(recent))

    def events(self) -> list[dict[str, Any]]:
        """`conversation.item.create` events; the summary goes at the root, before all the session has."""
        first, *rest = self.items
        return [create_item(first, previous_item_id="root")] + [create_item(item) for item in rest]

    @property
    def last_item_id(self) -> str:
        return str(self.items[-1]["id"])
