"""What ``aieng chat`` holds of a conversation in memory: all of it, or under
``--context-chars`` a window bounded by that limit, whatever the session's length."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aieng_hookspecs.types import Message

__all__ = ["WINDOW", "Conversation"]

#: The characters of recent turns a chat under ``--context-chars N`` holds, in multiples
#: of N: what cannot be sent any more (the model gets at most N) is let go.
WINDOW = 2


class Conversation:
    """A chat's messages: the head (its leading system messages up to and including the
    first user turn, which the context fitting never leaves out) and the recent turns.

    With ``limit`` (``--context-chars``) the recent turns held are the fewest latest ones
    whose characters reach :data:`WINDOW` times ``limit`` (at least the latest turn): older
    ones could never be sent again, so they are let go (the history file keeps them) and
    only counted, for the note that tells the model how much was left out. Memory and the
    work of a turn are then bounded by the limit, not by the session's length. A turn is a
    user message and what follows it (the answer, an agent's tool exchanges), let go whole.
    """

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.head: list[Message] = []
        self._turns: deque[list[Message]] = deque()
        self._chars = 0  # of the recent turns held
        #: messages and characters let go (never sent again).
        self.left = 0
        self.left_chars = 0

    def __len__(self) -> int:
        return len(self.head) + sum(map(len, self._turns))

    @property
    def messages(self) -> list[Message]:
        """The messages held, oldest first."""
        return [*self.head, *(m for turn in self._turns for m in turn)]

    def extend(self, messages: Sequence[Message]) -> None:
        """Add messages at the end (then let go of what the window no longer holds)."""
        from ..agent._messages import size

        for message in messages:
            if not any(m.role == "user" for m in self.head):
                self.head.append(message)
            elif message.role == "user" or not self._turns:
                self._turns.append([message])
                self._chars += max(1, size(message))
            else:
                self._turns[-1].append(message)
                self._chars += max(1, size(message))
        self._trim()

    def _trim(self) -> None:
        from ..agent._messages import size

        if self.limit is None:
            return
        room = WINDOW * self.limit
        while len(self._turns) > 1:
            oldest = sum(max(1, size(m)) for m in self._turns[0])
            if self._chars - oldest < room:
                return
            turn = self._turns.popleft()
            self._chars -= oldest
            self.left += len(turn)
            self.left_chars += sum(size(m) for m in turn)

    def reset(self) -> None:
        """Forget all but the leading system messages."""
        self.head = [m for m in self.head[:next(
            (i for i, m in enumerate(self.head) if m.role != "system"), len(self.head))]]
        self._turns.clear()
        self._chars = self.left = self.left_chars = 0
