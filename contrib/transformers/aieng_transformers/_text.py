"""From token ids to the text a stream may show: incremental decoding and stop strings.

Both are pure Python over a ``decode`` callable, so they are tested without a model.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

__all__ = ["IncrementalDecoder", "StopBuffer", "clean"]

_REPLACEMENT = "\ufffd"


def clean(text: str) -> str:
    """``text`` with lone surrogates (which UTF-8 cannot encode) replaced by U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    return text


class IncrementalDecoder:
    """Turns token ids, pushed one at a time, into text pieces whose concatenation is the
    decoded text, never splitting a multi-byte character.

    A byte-level tokenizer may spend several tokens on one character (``é``, an emoji);
    decoding a prefix of them yields U+FFFD, so a piece is released only once the decoded
    text no longer ends in an incomplete character. Each push decodes a short window
    (the last released token onwards), not the whole text, so a step costs O(1). The
    window starts in ``context`` (the prompt's last tokens), so tokenizers that render a
    word's leading space depending on what precedes it (SentencePiece) get it right.

    SentencePiece's byte fallback (``<0xE2><0x82><0xAC>``) decodes a whole run of byte
    tokens at once, and a run that is not valid UTF-8 becomes one U+FFFD per byte: a
    later byte token can turn a run's ``é`` into two U+FFFD. So nothing is released
    right after a token of ``hold`` (the byte tokens, and the special tokens a run goes
    on across since decoding skips them): a run comes out with the token that ends it.

    Bytes that never make a character (stray continuation bytes, cut-off leads) come out
    as the tokenizer's U+FFFD as soon as a later token shows they are settled, so a long
    run of them costs a few decodings per token, not a growing window.

    :param decode: ids to text (special tokens skipped, no clean-up of spaces).
    :param context: ids preceding the generated ones, not part of the output.
    :param hold: ids after which no text is released yet.
    """

    def __init__(self, decode: Callable[[Sequence[int]], str],
                 context: Sequence[int] = (), *, hold: Collection[int] = ()) -> None:
        self._decode = decode
        self._hold = hold
        self._ids: list[int] = list(context)
        self._prefix = 0  # start of the decoding window
        self._read = len(self._ids)  # end of what has been released

    def push(self, token: int) -> str:
        """Add one generated token; return the text it completes (often empty)."""
        self._ids.append(token)
        if token in self._hold:
            return ""
        before = self._decode(self._ids[self._prefix:self._read])
        after = self._decode(self._ids[self._prefix:])
        if len(after) > len(before) and not after.endswith(_REPLACEMENT):
            self._prefix, self._read = self._read, len(self._ids)
            return after[len(before):]
        end = len(self._ids) - 1
        if end > self._read:
            # The text ends in U+FFFD: a character still incomplete, or bytes no later
            # one can make valid (a stray continuation byte, a lead cut off). Decoding is
            # online, so the text before this token is settled once more text follows it
            # unchanged: release it, which keeps the window short (a run of bad bytes
            # would otherwise be decoded again whole at every token).
            settled = self._decode(self._ids[self._prefix:end])
            if len(before) < len(settled) < len(after) and after.startswith(settled):
                self._prefix, self._read = self._read, end
                return settled[len(before):]
        return ""

    def flush(self) -> str:
        """The text of the tokens pushed but not yet released (at the end of generation),
        with U+FFFD for a character left incomplete."""
        if self._read == len(self._ids):
            return ""
        before = self._decode(self._ids[self._prefix:self._read])
        after = self._decode(self._ids[self._prefix:])
        self._prefix = self._read = len(self._ids)
        return after.removeprefix(before)


class StopBuffer:
    """Cuts a stream of text at the first stop string and holds back text that might be
    the start of one, so no piece of a stop string is ever released.

    :param stops: the stop strings (empty strings are ignored).
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(dict.fromkeys(s for s in stops if s))
        self._pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        """Add a piece of text; return what may be released now. After a stop string
        appears, :attr:`stopped` is true and the text from the stop string on is dropped."""
        if self.stopped:
            return ""
        if not self._stops:
            return piece
        pending = self._pending + piece
        found = [at for stop in self._stops if (at := pending.find(stop)) >= 0]
        if found:
            self.stopped = True
            self._pending = ""
            return pending[:min(found)]
        hold = self._held(pending)
        self._pending = pending[len(pending) - hold:]
        return pending[:len(pending) - hold]

    def flush(self) -> str:
        """Release what is held back (generation ended without a stop string)."""
        pending, self._pending = self._pending, ""
        return "" if self.stopped else pending

    def _held(self, text: str) -> int:
        # The longest suffix of text that is a proper prefix of some stop string.
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest
