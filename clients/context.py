"""Context restore: what a new session is given so the conversation continues where it was.

A new session knows nothing. Both reference clients put the conversation back the same way: a `system`
message at `previous_item_id: "root"` summarising the older entries as `User: …` / `Assistant: …` lines, then
the most recent entries replayed verbatim as GA items — user `input_text`, assistant `output_text` (a
replayed `text` part is rejected and the context silently lost).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rtsim.clients.common import create_item, message_item

if TYPE_CHECKING:
    from rtsim.clients.link import Link

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


class ConversationMemory:
    """The conversation as the reference client keeps it, and how much of it each session already holds.

    A finished turn is remembered as the user's words (what the server heard of an audio turn) and, if the
    user heard it whole, the reply; an interrupted reply is not restored. A session's `remembered` counts the
    entries it holds, so a rotation can append what the old session finished after the new one was restored.
    """

    def __init__(self, recent_turns: int) -> None:
        self.entries: list[Entry] = []
        self.keep = recent_turns * 2  # a turn is two entries: the user's words and the reply

    def remember(self, link: Link, user_text: str, reply: str | None) -> None:
        self.entries.append(("user", user_text))
        if reply:
            self.entries.append(("assistant", reply))
        if link.remembered == len(self.entries) - (2 if reply else 1):
            link.remembered = len(self.entries)  # this session holds everything the client remembers

    async def restore(self, link: Link, *, timeout: float) -> tuple[Restore, bool] | None:
        """Give a new session the conversation so far and wait until it has it all.

        None if there is nothing to restore; else the restore and whether the server accepted every item.
        """
        entries = list(self.entries)
        if not entries:
            return None
        restore = Restore.of(entries, keep=self.keep, id_stem=f"ctx{link.number}")
        accepted = await link.send_acknowledged(restore.events(), timeout)
        link.remembered = len(entries)
        return restore, accepted

    async def catch_up(self, link: Link) -> int:
        """Append to `link` the entries it does not hold yet; how many there were."""
        missing = self.entries[link.remembered :]
        for role, text in missing:
            await link.send(create_item(message_item(role, text)))
        link.remembered = len(self.entries)
        return len(missing)
