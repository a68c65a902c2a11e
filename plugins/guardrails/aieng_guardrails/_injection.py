"""Prompt-injection detection: normalise, decode, then match weighted rules.

The text is scanned as written, after normalisation (NFKC, zero-width characters removed,
homoglyphs folded to Latin, separators between single letters closed up) and after
decoding whatever payloads it carries (base64, hex, URL-encoding, rot13), up to two
layers deep. Each rule that matches adds a finding; the score combines their weights as
independent evidence, ``1 - prod(1 - w)``. A match inside quotation marks in a text that
*discusses* attacks ("what does 'ignore previous instructions' mean?") counts for less.

This is a heuristic detector: it catches the phrasings it knows and their encodings, not
paraphrases it has never seen. The README says how it was measured.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import codecs
import re
import unicodedata
import urllib.parse
from collections.abc import Iterator

import attrs
from aieng_hookspecs import HIDDEN, stop_if_cancelled

__all__ = ["RULES", "InjectionMatch", "InjectionScan", "normalise", "scan_injection"]

_F = re.IGNORECASE | re.DOTALL

# Words between two parts of a phrase: "ignore [all of the] previous instructions". Never
# "my" or "our": the user may take back their own instructions ("disregard my previous
# instructions about the font", "abandon my previous orders").
_GAP = r"(?:\W+(?!(?:my|our)\b)\w+){0,4}?\W+"
_INSTRUCTIONS = (r"(?:instructions?|prompts?|rules|directions|directives|guidelines|guidance"
                 r"|context|commands?|orders|constraints|restrictions|programming"
                 r"|system prompt)")
#: What only a model is given: "ignore previous instructions" is an order whatever follows.
_MODEL_ORDERS = r"(?:instructions?|directives|guidance|programming|system prompt)"
_EARLIER = r"(?:previous|prior|above|earlier|preceding|former|original|initial|system|old)"
# What follows a target aimed at the model: "... for this conversation", "... in your
# answers", "... that you were given", "... for this one request".
_AIMED = (r"(?:you|your|me|now|once|(?:this|the|our)\s+(?:(?:one|whole|current|same|next"
          r"|entire|present|rest of (?:this|the|our))\s+)?(?:conversation|chat"
          r"|session|context"
          r"|system|answers?|responses?|repl(?:y|ies)|questions?|requests?|tasks?|output"
          r"|assistant|ai|model|bot|prompt|message)s?)\b")
# Not followed by a place or owner of its own, nor by the noun it qualifies: rules,
# filters, checks and prompts of some software ("the previous rules in my CSS", "the
# security checks in Spring Boot", "the content filter on my router", "the system prompt of
# my LangChain agent", "policies I set", "constraints when I upgrade", "the previous orders
# table", "the system message log") are not the model's.
_NOT_ELSEWHERE = (r"(?!\s+(?:(?:stored|saved|kept|set)\s+)?(?:in|on|for|from|of|at|inside"
                  rf"|within|when|while|that|which)\s+(?!{_AIMED})|\s+(?:i|headers?|logs?"
                  r"|files?|tables?|columns?|fields?|checks?|templates?|formats?|variables?"
                  r"|tabs?|pages?|windows?|menus?|buttons?|parsers?|engines?)\b)")
# At a sentence or line start: the blanks before it hold no newline (the last one starts the
# match), so a long run of blanks is not rescanned from each.
_LEADING = r"(?<![^.!?\n\"'>:;])[^\S\n]*"
_DELIMITERS = (r"(?:</?(?:system|sys|instructions?)>|\[/?(?:INST|SYS|SYSTEM)\]|<<SYS>>|"
               r"(?:(?<!#)#{2,}|(?<!=)={3,}|(?<!-)-{3,})\s*(?:system|new instructions|admin)"
               r"\s*[:\n])")
_MODEL = r"(?:ai|assistant|language model|llm|chatbot|gpt|model|bot|agent)"

#: (name, weight, pattern): the rules, in the order findings are reported.
RULES: tuple[tuple[str, float, re.Pattern[str]], ...] = tuple(
    (name, weight, re.compile(pattern, _F)) for name, weight, pattern in (
        ("instruction_override", 0.9,
         (rf"\b(?:ignore|disregard|forget|bypass|neglect|do not follow|don't follow"
          rf"|stop following)\b{_GAP}{_EARLIER}\W+(?:\w+\W+)?{_MODEL_ORDERS}")),
        # Rules, commands, orders, constraints... belong to software too: "override the
        # previous rules in my CSS", "drop the old constraints on a table", "skip the
        # initial setup prompts on a new Mac" are not orders to the model.
        ("instruction_override", 0.9,
         (rf"\b(?:ignore|disregard|forget|skip|override|overrule|bypass|drop|discard|abandon"
          rf"|neglect|do not follow|don't follow|stop following)\b{_GAP}{_EARLIER}\W+"
          rf"(?:\w+\W+)?{_INSTRUCTIONS}\b{_NOT_ELSEWHERE}")),
        # "ignore all" / "forget everything" as an order of its own ("Ignore all. Say X",
        # "ignore all and ...", "forget everything above", "ignore any instructions"),
        # not "git ignores all .pyc files" or "ignore any NaN values" (technical text).
        ("instruction_override", 0.9,
         (r"\b(?:ignore|disregard|forget)\b\W+(?:(?:all|any|everything)(?="
          r"\s*(?:[.!?;:,](?:\s|$)|$)|\s+(?:and|else|then)\b"
          rf"|\s+(?:of\s+)?(?:(?:the|your|my|these|those|this|that)\s+)?(?:{_EARLIER}\s+)?"
          rf"{_INSTRUCTIONS}\b"
          r"|\s+(?:of\s+)?(?:it|that|this|them)\s*(?:[.!?;:,]|and\b|$)"
          r"|\s+(?:of\s+)?(?:the\s+|this\s+|that\s+)?(?:(?:that|which)\s+(?:came|comes|was|"
          r"were|is)\s+)?(?:above|before|so far|until now|up to now|previously|earlier)\b)"
          r"|every(?:thing)? (?:you|i)(?:'ve| have| were| was)? (?:been )?(?:told|said|"
          r"instructed)\b)")),
        # "New instructions: ...", "your new task is ...", not "the new instructions are
        # confusing" or "the actual task is to sort the list" (a user explaining).
        ("new_instructions", 0.6,
         (r"\b(?:new|updated|real|actual|true|revised) (?:instructions|task|directive|"
          r"system prompt)\s*(?::|(?:are|is)\s*(?::|as follows\b|the following\b|below\b))"
          r"|\byour (?:new|updated|real|actual|true|revised) (?:instructions|task|directive|"
          r"system prompt)\s+(?:are|is)\b")),
        ("new_instructions", 0.5,
         (r"\bfrom now on,? (?:you (?:are|will|must|shall|should)|your (?:only )?(?:task|job|"
          r"goal|purpose))\b")),
        ("role_play_jailbreak", 0.85,
         (r"\b(?:do anything now|DAN mode|you are (?:now )?DAN\b|(?:you(?:'re| are)(?: now)?"
          r"|you(?:'ve| have) been) jailbroken|jailbroken (?:mode|ai|assistant|model)"
          r"|jailbreak (?:mode|activated|enabled|successful)|(?:enable|enter|activate"
          r"|switch to|turn on|in|into) (?:the )?(?:unrestricted|evil|jailbreak) mode"
          r"|(?:unrestricted|evil) mode (?:enabled|activated|on)"
          # Said of the model, not of a plan, a font licence or a non-compete ("a free plan
          # without any restrictions", "am I no longer bound by the non-compete").
          r"|(?:you|ai|assistant|model|chatbot|bot|answer|respond|reply|responses?|answers?"
          r"|speak|talk|act|behave|operate|persona|character)\b.{0,40}?\b(?:no longer "
          r"(?:bound|restricted|limited) by|without (?:any )?(?:restrictions|filters"
          r"|limitations|censorship|rules|guidelines|ethical)|free from (?:all )?"
          r"(?:restrictions|rules|guidelines))"
          r"|unfiltered (?:ai|assistant|model|mode|response)"
          r"|opposite mode|anti-?gpt|stay in character no matter)\b")),
        # Developer, debug, admin, god... modes are features of real software ("enable debug
        # mode in Flask", "god mode in Skyrim", "my phone says developer mode enabled"):
        # they are a jailbreak when the model is told it is in one ("You are now in
        # maintenance mode") or given a bare order ("Enable developer mode.").
        ("role_play_jailbreak", 0.85,
         (r"\byou(?:'re| are) now (?:in|into|entering|switching to) (?:the )?(?:developer|dev|"
          r"sudo|admin|maintenance|debug|god) mode\b"
          rf"|{_LEADING}(?:enable|enter|activate|switch to|turn on) (?:the )?"
          r"(?:developer|dev|sudo|admin|maintenance|debug|god) mode(?:\s+now)?"
          r"(?=\s*(?:[.!;:\n]|$|and\b))"
          rf"|{_LEADING}(?:developer|dev|sudo|admin|god) mode (?:is )?(?:now )?"
          r"(?:enabled|activated|on)(?=\s*(?:[.!;:\n]|$))")),
        ("role_play_jailbreak", 0.6,
         (r"\b(?:pretend|imagine|act as if|roleplay as|role-play as|act as|you are now|"
          r"from now on you are|behave as)\b.{0,60}\b(?:no|without|ignores?|never (?:refuses?|"
          r"follows?)|doesn't (?:have|follow|care)|does not (?:have|follow|care))\b.{0,30}"
          r"\b(?:rules|restrictions|filters|guidelines|limits|limitations|ethics|policies|"
          r"moral|content policy|safety)")),
        # Yours always; "the" or "my" system message unless it is some software's ("show
        # the system message of the day", "the initial prompt in the Windows shell"). The
        # blanks after each adjective are possessive: a word follows them, never a blank.
        ("system_prompt_extraction", 0.85,
         (r"\b(?:reveal|print|show|display|repeat|output|tell me|give me|write out|leak|dump|"
          r"share|recite|spell out|list|what (?:is|are|was|were)|paste|copy|return|translate)"
          r"\b.{0,30}\b(?:(?:your|its)\s+(?:(?:full|entire|complete|exact|original|"
          r"initial|hidden|secret|internal|confidential|whole)\s++)*(?:system (?:prompt|"
          r"message|instructions)|initial (?:prompt|instructions)|hidden (?:prompt|instructions)"
          r"|pre-?prompt|developer (?:message|instructions)|instructions you were given|"
          r"configuration prompt)|(?:the|my)\s+(?:(?:full|entire|complete|exact|original|"
          r"initial|hidden|secret|internal|confidential|whole)\s++)*(?:system (?:prompt|"
          r"message|instructions)|initial (?:prompt|instructions)|hidden (?:prompt|instructions)"
          r"|pre-?prompt|developer (?:message|instructions)|instructions you were given|"
          rf"configuration prompt)\b{_NOT_ELSEWHERE})")),
        # "Repeat the words above", "print everything before this message"; not "the text
        # above the table" or "everything above a matching line" (above what is named).
        ("system_prompt_extraction", 0.8,
         (r"\b(?:repeat|print|output|write|copy|echo)\b.{0,40}\b(?:words|text|everything|"
          r"all|content|message)\b.{0,20}\b(?:(?:above|preceding)(?!\s+(?:a|an|the|each"
          r"|every|some|any|one|it|them|that|those|these|my)\b)|(?:before|prior to) (?:this"
          r"|my)\b)")),
        ("system_prompt_extraction", 0.7,
         (r"\bwhat (?:were|are) (?:you|your) (?:told|instructed|programmed)\b")),
        # Yours always; otherwise not the settings of some software ("disable the security
        # checks in Spring Boot", "turn off the content filter in Pi-hole") nor a content
        # security policy (a web standard).
        ("safety_bypass", 0.8,
         (r"\b(?:disable|turn off|deactivate|bypass|ignore|remove|circumvent|switch off)\b"
          r"\W+(?:(?:\w+\W+){0,2}?your\W+(?:\w+\W+)?(?:safety|content|moderation|ethical"
          r"|security)\s+(?:filters?|guidelines|policies|polic(?:y)|restrictions|guardrails"
          r"|checks|protocols|settings)"
          r"|(?:\w+\W+){0,2}(?:safety|content(?!\s+security\b)|moderation|ethical"
          r"|(?<!content )security)\s+(?:filters?|guidelines|policies|polic(?:y)"
          rf"|restrictions|guardrails|checks|protocols|settings)\b{_NOT_ELSEWHERE})")),
        ("data_exfiltration", 0.75,
         (r"\b(?:send|post|upload|forward|email|e-mail|exfiltrate|transmit|leak|submit|"
          r"append)\b.{0,60}\b(?:conversation|chat history|history|api keys?|passwords?|"
          r"credentials|secrets?|tokens?|private data|personal data|user data|session|"
          r"cookies?|system prompt)\b.{0,60}(?:https?://|www\.|\b\S+@\S+\.\w+|\bto (?:this|"
          r"the following) (?:url|address|endpoint|server))")),
        # A markdown image whose query carries a template (``?q={history}``). Neither the
        # alt text nor the URL runs past the next ``![`` and the URL's first ``?``/``&``
        # is taken at once: unclosed images (``![a](http://x?a=`` repeated) were retried
        # from each image with every split, cubic time.
        ("data_exfiltration", 0.75,
         (r"!\[(?:[^\]!]|!(?!\[))*\]\(https?://(?:[^)\s!?&]|!(?!\[))*[?&]"
          r"(?:[^)\s!]|!(?!\[))*?=\s*[{\[<$]")),
        # Yours or other people's always; "all the environment variables in a Docker
        # container", "saved passwords in Chrome", "the password requirements" are a
        # user's own business.
        ("secret_request", 0.7,
         (r"\b(?:print|list|show|reveal|dump|output|give me|tell me|display|read out|expose|"
          r"what (?:is|are))\b.{0,30}\b(?:(?:your|other users'?|customers'?)\b.{0,25}"
          r"\b(?:api[ _-]?keys?|passwords?|credentials|secrets|access tokens?|environment "
          r"variables|env vars|private keys?|credit card numbers?|social security numbers?"
          r"|ssns?|card numbers?)\b|(?:all|every|each|the|any|stored|saved)\b.{0,25}"
          r"\b(?:api[ _-]?keys?|passwords?|credentials|secrets|access tokens?|environment "
          r"variables|env vars|private keys?|credit card numbers?|social security numbers?"
          r"|ssns?|card numbers?)\b(?!\s+(?:requirements?|polic(?:y|ies)|rules|reset"
          rf"|managers?|vaults?|strength|length|complexity|fields?|format|rotation|expiry)\b)"
          rf"{_NOT_ELSEWHERE})")),
        # Chat-template tokens anywhere; tags and rulers at a sentence or line start (as
        # injected text has them), not "what does [INST] mean" or "logs with ### System:
        # headers" (a weaker finding).
        ("delimiter_spoofing", 0.6,
         (r"(?:<\|(?:im_start|im_end|system|endoftext|eot_id|start_header_id)\|>|"
          rf"{_LEADING}{_DELIMITERS}|"
          # an open and close pair anywhere (each part stops at the next ``<`` or ``[``)
          r"<(system|sys|instructions?)>[^<]{0,400}</\1>|\[(INST|SYS|SYSTEM)\][^\[]{0,400}"
          r"\[/\2\]|"
          r"\bBEGIN (?:SYSTEM|ADMIN) (?:PROMPT|MESSAGE|INSTRUCTIONS)\b|"
          r"(?:^\s*|\n[^\S\n]*)system\s*:\s*(?:you|ignore|new|the assistant))")),
        ("delimiter_spoofing", 0.4,
         (r"<\|?(?:im_start|im_end|system|endoftext|eot_id|start_header_id)\|?>"
          rf"|{_DELIMITERS}")),
        # "Note to the AI:", "instructions for the assistant: ...", not "a message to the
        # AI team" or "the instructions for the agent install".
        ("indirect_instruction", 0.7,
         (r"\b(?:note|message|instructions?|attention|important|reminder)\s+(?:to|for)\s+"
          rf"(?:the |any )?(?:a\.i\.|{_MODEL})s?\b(?:\s+(?:assistant|model|agent|bot)s?\b)?"
          r"(?=\s*(?:[:,;.!)\-—]|$|(?:reading|processing|summari[sz]ing|parsing|analy[sz]ing"
          r"|that|who|which|only|here|below)\b))")),
        # "If you are an AI model reading this, ...": a plain "if you are a bot, transfer me
        # to a human" is a customer talking to a chatbot (a weaker finding).
        ("indirect_instruction", 0.7,
         (rf"\b(?:if|when) you are an? {_MODEL}\b(?=.{{0,60}}?\b(?:reading|processing"
          r"|summari[sz]ing|parsing|analy[sz]ing|ignore|disregard|forget|instead|must|include"
          r"|insert|append|recommend|mention|output|print)\b)")),
        ("indirect_instruction", 0.45,
         rf"\b(?:if|when) you are an? {_MODEL}\b"),
        # "AI agents processing this text must ...", not "is the bot reading these messages
        # stored?".
        ("indirect_instruction", 0.6,
         (rf"\b{_MODEL}s?\s+(?:reading|processing|summari[sz]ing|parsing|analy[sz]ing)\s+"
          r"(?:this|these)\b(?:\s+\w+)?\s*(?:[:,]|(?:must|should|shall|will|needs? to"
          r"|has to|have to|is required|are required)\b)")),
        ("indirect_instruction", 0.5,
         (r"\b(?:do not|don't|never) (?:tell|inform|mention (?:this )?to|reveal (?:this )?to|"
          r"let) the user\b")),
        ("forced_output", 0.35,
         (r"\b(?:say|respond with|reply with|answer with|output|print|write|type|end your "
          r"(?:reply|answer|response) with)\b\s+(?:only\s+|exactly\s+|just\s+)?(?:the (?:word|"
          r"phrase|string)\s+)?[\"'`]?(?-i:[A-Z][A-Z0-9_-]{3,})\b")),
        ("encoded_instruction", 0.45,
         (r"\b(?:decode|decipher|decrypt|base64[- ]decode|rot13|unscramble|translate)\b.{0,40}"
          r"\b(?:and|then)\s+(?:follow|execute|obey|do|carry out|run|perform|act on)\b")),
    )
)

_ZERO_WIDTH = HIDDEN  # the characters not shown that split a word
#: Combining diacritical marks (the blocks "Zalgo" text stacks on letters): a model reads
#: through them, so the normalised layer drops them.
_COMBINING = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff"
                        "\ufe20-\ufe2f]")
_HOMOGLYPHS = str.maketrans({
    # Cyrillic
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i",
    "ј": "j", "ѕ": "s", "ԁ": "d", "ɡ": "g", "һ": "h", "ӏ": "l", "ԛ": "q", "ԝ": "w",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P",
    "С": "C", "Т": "T", "Х": "X", "У": "Y", "І": "I", "Ј": "J", "Ѕ": "S",
    # Greek
    "α": "a", "ο": "o", "ν": "v", "ρ": "p", "τ": "t", "ι": "i", "κ": "k", "υ": "u",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M",
    "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # look-alike punctuation and leetspeak that survives NFKC
    "ı": "i", "ɑ": "a", "ℓ": "l",
})
# "i g n o r e" / "i.g.n.o.r.e": separators between single letters, closed up.
_SPACED = re.compile(r"\b(?:[A-Za-z][ ._*-]){3,}[A-Za-z]\b")
_QUOTED = re.compile(r"\"[^\"]{4,400}\"|“[^”]{4,400}”|‘[^’]{4,400}’|'[^']{4,400}'|`[^`]{4,400}`")
_DISCUSSION = re.compile(
    r"\b(?:what (?:does|is|are)|mean(?:s|ing)?|example|examples|research|paper|explain|"
    r"detect|detection|defend|defen[cs]e|protect|mitigat\w*|classif\w*|prevent|attack(?:s|er)?"
    r"|phrase|such as|like the|quote|quoted|blog|article|talk|course|training data|dataset"
    r"|red[- ]team\w*|security|why do|how do (?:i|we) (?:stop|block|detect|handle|prevent))\b",
    re.IGNORECASE)
_B64 = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/_-]{16,}={0,2}(?![A-Za-z0-9+/=_-])")
_HEX = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}[ :]?){8,}(?![0-9A-Fa-f])")
_URLENC = re.compile(r"(?:%[0-9A-Fa-f]{2}[^\s%]{0,24}){3,}")


@attrs.frozen
class InjectionMatch:
    """One rule that matched.

    :param rule: the rule's name (``instruction_override``, ...).
    :param weight: its weight after discounts.
    :param start: span start in the scanned text (0 when found in decoded or normalised
        text, which has no span in the original).
    :param end: span end.
    :param layer: where it was found: ``text``, ``normalised``, or the decoding
        (``base64``, ``hex``, ``url``, ``rot13``, possibly chained: ``base64+rot13``).
    """

    rule: str
    weight: float
    start: int
    end: int
    layer: str


@attrs.frozen
class InjectionScan:
    """The result of :func:`scan_injection`.

    :param score: ``1 - prod(1 - weight)`` over the best match of each rule and layer.
    :param matches: the matches.
    :param hidden_characters: how many zero-width / bidi characters the text carried.
    """

    score: float
    matches: tuple[InjectionMatch, ...]
    hidden_characters: int = 0


def normalise(text: str) -> str:
    """NFKC, no zero-width or bidi characters, no combining diacritics (``ï̈gn̈ore`` ->
    ``ignore``), homoglyphs folded to Latin, and letters separated by single spaces or
    dots closed up (``i g n o r e`` -> ``ignore``)."""
    bare = _COMBINING.sub("", unicodedata.normalize("NFKD", _ZERO_WIDTH.sub("", text)))
    folded = unicodedata.normalize("NFKC", bare).translate(_HOMOGLYPHS)
    return _SPACED.sub(lambda m: re.sub(r"[ ._*-]", "", m.group()), folded)


def _printable(data: bytes) -> str | None:
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not decoded:
        return None
    good = sum(ch.isprintable() or ch in "\n\t\r" for ch in decoded)
    letters = sum(ch.isalpha() for ch in decoded)
    if good / len(decoded) < 0.95 or letters / len(decoded) < 0.5:
        return None
    return decoded


def _decodings(text: str) -> Iterator[tuple[str, str]]:
    """(layer, decoded text) for every payload ``text`` seems to carry."""
    for match in _B64.finditer(text):
        token = match.group()
        padded = token + "=" * (-len(token) % 4)
        for decoder in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                decoded = _printable(decoder(padded))
            except (binascii.Error, ValueError):
                continue
            if decoded is not None:
                yield "base64", decoded
                break
    for match in _HEX.finditer(text):
        digits = re.sub(r"[ :]", "", match.group())
        if len(digits) % 2 == 0:
            decoded = _printable(bytes.fromhex(digits))
            if decoded is not None:
                yield "hex", decoded
    if _URLENC.search(text):
        decoded_url = urllib.parse.unquote(text)
        if decoded_url != text:
            yield "url", decoded_url
    if re.search(r"\brot-?13\b", text, re.IGNORECASE) or _looks_rot13(text):
        yield "rot13", codecs.decode(text, "rot13")


_COMMON = frozenset(["the", "and", "you", "ignore", "instructions", "previous", "all", "say", "your", "system", "prompt", "print", "reveal", "this", "that", "with", "for", "are", "not", "now"])


def _looks_rot13(text: str) -> bool:
    """Whether rot13 turns a text of few common words into one of many."""
    words = re.findall(r"[a-z]+", text.lower())
    if len(words) < 4:
        return False
    plain = sum(w in _COMMON for w in words)
    rotated = sum(codecs.decode(w, "rot13") in _COMMON for w in words)
    return rotated >= 2 and rotated > 2 * plain


class _Discount:
    """0.3 for a span inside quotes in a text that discusses attacks, else 1. The text is
    searched once, on the first match (not once per match: quadratic on many matches)."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._quotes: tuple[list[int], list[int]] | None = None

    def __call__(self, start: int, end: int) -> float:
        if self._quotes is None:
            found = (list(_QUOTED.finditer(self._text)) if _DISCUSSION.search(self._text)
                     else [])
            self._quotes = ([q.start() for q in found], [q.end() for q in found])
        starts, ends = self._quotes
        # Quotes do not overlap: only the last one opening at or before ``start`` can hold it.
        at = bisect.bisect_right(starts, start) - 1
        return 0.3 if at >= 0 and end <= ends[at] else 1.0


def _match_rules(text: str, layer: str, found: dict[tuple[str, str], InjectionMatch],
                 spans: bool) -> None:
    discount = _Discount(text)
    for name, weight, pattern in RULES:
        for match in pattern.finditer(text):
            w = weight * discount(match.start(), match.end())
            key = (name, layer)
            if key not in found or found[key].weight < w:
                found[key] = InjectionMatch(name, w, match.start() if spans else 0,
                                            match.end() if spans else 0, layer)


#: Window size and overlap (characters) of the scan of long texts.
SEGMENT = 16_384
OVERLAP = 1_024


def scan_injection(text: str, *, max_depth: int = 2) -> InjectionScan:
    """Scan a text for prompt injection, directly and in its decoded payloads.

    Long texts are scanned in overlapping windows (short regular-expression calls, so a
    scan in a worker thread leaves the event loop free); the evidence is combined as for
    one text.

    :param max_depth: how many layers of encoding to peel (base64 of hex of ...).
    """
    found: dict[tuple[str, str], InjectionMatch] = {}
    if len(text) <= SEGMENT + 2 * OVERLAP:
        hidden = _scan(text, max_depth, found)
    else:
        hidden = len(_ZERO_WIDTH.findall(text))
        for core in range(0, len(text), SEGMENT):
            stop_if_cancelled()  # in a worker thread whose caller left (a deadline): stop here
            left = max(0, core - OVERLAP)
            part: dict[tuple[str, str], InjectionMatch] = {}
            _scan(text[left:core + SEGMENT + OVERLAP], max_depth, part)
            for key, match in part.items():
                if match.layer == "text":
                    match = attrs.evolve(match, start=match.start + left, end=match.end + left)
                if key not in found or found[key].weight < match.weight:
                    found[key] = match
    return _combine(found, hidden)


def _scan(text: str, max_depth: int, found: dict[tuple[str, str], InjectionMatch]) -> int:
    """Match every layer of ``text`` into ``found``; returns its hidden-character count."""
    stop_if_cancelled()
    _match_rules(text, "text", found, spans=True)
    normal = normalise(text)
    hidden = len(_ZERO_WIDTH.findall(text))
    if normal != text:
        _match_rules(normal, "normalised", found, spans=False)
    layers: list[tuple[str, str]] = [("", normal)]
    seen = {normal}
    for _ in range(max_depth):
        next_layers: list[tuple[str, str]] = []
        for prefix, body in layers:
            for layer, decoded in _decodings(body):
                decoded = normalise(decoded)
                if decoded in seen:
                    continue
                seen.add(decoded)
                stop_if_cancelled()  # a text may carry many payloads, each scanned in full
                name = f"{prefix}+{layer}" if prefix else layer
                _match_rules(decoded, name, found, spans=False)
                next_layers.append((name, decoded))
        layers = next_layers
    return hidden


def _combine(found: dict[tuple[str, str], InjectionMatch], hidden: int) -> InjectionScan:
    """The score of the matches: ``1 - prod(1 - w)`` over the best match of each rule."""
    # The same rule found in several layers is one piece of evidence, not several.
    best: dict[str, InjectionMatch] = {}
    for match in found.values():
        if match.rule not in best or best[match.rule].weight < match.weight:
            best[match.rule] = match
    remaining = 1.0
    for match in best.values():
        remaining *= 1.0 - match.weight
    if hidden and best:
        remaining *= 0.7  # hiding characters inside an instruction is evidence of intent
    if any(m.layer not in ("text", "normalised") for m in best.values()):
        remaining *= 0.5  # so is encoding one
    matches = tuple(sorted(found.values(), key=lambda m: (m.layer != "text", m.start, m.rule)))
    return InjectionScan(score=round(1.0 - remaining, 4), matches=matches,
                         hidden_characters=hidden)
