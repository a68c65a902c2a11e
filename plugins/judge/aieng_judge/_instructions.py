"""``instructions``: verifiable instruction checks (IFEval style), no model involved."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs
from aieng_hookspecs import hookimpl
from aieng_hookspecs.types import Sample, Score
from attrs import validators as v

__all__ = [
    "CHECK_KINDS",
    "CheckResult",
    "InstructionCheck",
    "InstructionsJudge",
    "InstructionsOptions",
    "run_check",
]

CheckKind = Literal["json", "json_schema", "words", "sentences", "paragraphs", "keywords",
                    "forbidden", "lowercase", "uppercase", "bullets", "ends_with",
                    "starts_with"]
CHECK_KINDS: tuple[str, ...] = ("json", "json_schema", "words", "sentences", "paragraphs",
                                "keywords", "forbidden", "lowercase", "uppercase", "bullets",
                                "ends_with", "starts_with")
_COUNTED = ("words", "sentences", "paragraphs", "bullets")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# Possessive runs, and a stop run tried from its first character only, and a bullet's
# indent that stays on its line: each was retried from every character of a long run
# (quadratic: 20,000 "!" or blank lines took seconds). The matches are the same.
_FENCED = re.compile(r"^```[a-zA-Z]*+\s*+\n?(.*?)\n?```$", re.DOTALL)
_WORDS = re.compile(r"\w+(?:['’-]\w+)*", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<![.!?])[.!?]++(?=[\"')\]]*(?:\s|$))")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_BULLET = re.compile(r"^[^\S\n]*+(?:[-*•+]|\d+[.)])\s+\S", re.MULTILINE)
_opt_count = v.optional(v.and_(v.instance_of(int), v.ge(0)))


def _jsonschema() -> Any:
    """The jsonschema module, imported on first use (it costs ~0.3 s; ``aieng plugins``
    loads this plugin and must stay fast)."""
    import jsonschema  # type: ignore[import-untyped]

    return jsonschema


def _keywords(value: Sequence[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError(f"keywords must be a list of strings, got the string {value!r}")
    return tuple(value)


@attrs.frozen(kw_only=True)
class InstructionCheck:
    """One verifiable instruction.

    :param kind: ``json`` (the text, or one fenced block, parses as JSON), ``json_schema``
        (and validates against ``schema``), ``words`` / ``sentences`` / ``paragraphs`` /
        ``bullets`` (a count within the bounds), ``keywords`` (every keyword appears),
        ``forbidden`` (none appears), ``lowercase`` / ``uppercase`` (no letter of the other
        case), ``ends_with`` / ``starts_with`` (``phrase``, ignoring surrounding space).
    :param name: the score's name, ``instruction.<name>``; by default the kind.
    :param at_least: the smallest count allowed (counting kinds).
    :param at_most: the largest count allowed (counting kinds).
    :param exactly: the only count allowed (counting kinds; not with the bounds).
    :param keywords: the words of ``keywords`` / ``forbidden`` (whole-word matches).
    :param phrase: the text of ``ends_with`` / ``starts_with``.
    :param schema: the JSON schema of ``json_schema``.
    :param case_sensitive: match keywords and phrases with case (default: ignore case).
    """

    kind: CheckKind = attrs.field(validator=v.in_(CHECK_KINDS))
    name: str | None = attrs.field(default=None)
    at_least: int | None = attrs.field(default=None, validator=_opt_count)
    at_most: int | None = attrs.field(default=None, validator=_opt_count)
    exactly: int | None = attrs.field(default=None, validator=_opt_count)
    keywords: tuple[str, ...] = attrs.field(default=(), converter=_keywords,
                                            validator=v.deep_iterable(v.and_(
                                                v.instance_of(str), v.min_len(1))))
    phrase: str | None = attrs.field(default=None, validator=v.optional(v.and_(
        v.instance_of(str), v.min_len(1))))
    schema: dict[str, Any] | None = attrs.field(default=None, hash=False,
                                                validator=v.optional(v.instance_of(dict)))
    case_sensitive: bool = attrs.field(default=False, validator=v.instance_of(bool))

    def __attrs_post_init__(self) -> None:
        kind = self.kind
        if self.name is not None and not _NAME.match(self.name):
            raise ValueError(f"check name must be a lower-case word (a-z, 0-9, _), got "
                             f"{self.name!r}")
        if self.name == "all":
            raise ValueError("check name 'all' is taken by the instruction.all score")
        bounds = (self.at_least, self.at_most, self.exactly)
        if kind in _COUNTED:
            if all(b is None for b in bounds):
                raise ValueError(f"the {kind} check needs at_least, at_most or exactly")
            if self.exactly is not None and (self.at_least is not None
                                             or self.at_most is not None):
                raise ValueError(f"the {kind} check takes exactly, or at_least / at_most, "
                                 "not both")
            if (self.at_least is not None and self.at_most is not None
                    and self.at_least > self.at_most):
                raise ValueError(f"the {kind} check's at_least ({self.at_least}) exceeds "
                                 f"at_most ({self.at_most})")
        elif any(b is not None for b in bounds):
            raise ValueError(f"the {kind} check takes no at_least / at_most / exactly")
        if (kind in ("keywords", "forbidden")) != bool(self.keywords):
            raise ValueError(f"keywords belong to the keywords and forbidden checks (and they "
                             f"need some); got kind {kind!r} with {list(self.keywords)}")
        if (kind in ("ends_with", "starts_with")) != (self.phrase is not None):
            raise ValueError(f"phrase belongs to the ends_with and starts_with checks (and "
                             f"they need one); got kind {kind!r} with phrase {self.phrase!r}")
        if (kind == "json_schema") != (self.schema is not None):
            raise ValueError(f"schema belongs to the json_schema check (and it needs one); "
                             f"got kind {kind!r}")
        if self.schema is not None:
            jsonschema = _jsonschema()
            try:
                jsonschema.validators.validator_for(self.schema).check_schema(self.schema)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"the json_schema check's schema is invalid: "
                                 f"{exc.message}") from None

    @property
    def label(self) -> str:
        """The score's name: ``instruction.<name or kind>``."""
        return f"instruction.{self.name or self.kind}"


def as_check(value: InstructionCheck | Mapping[str, Any], where: str) -> InstructionCheck:
    """A check from itself or a table of its fields, errors naming ``where``."""
    if isinstance(value, InstructionCheck):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"{where}: expected a table with a kind, got {value!r}")
    try:
        return InstructionCheck(**dict(value))
    except TypeError as exc:
        raise ValueError(f"{where}: {exc} (fields: "
                         f"{', '.join(a.name for a in attrs.fields(InstructionCheck))})"
                         ) from None
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _checks(value: Sequence[InstructionCheck | Mapping[str, Any]]) -> tuple[InstructionCheck,
                                                                            ...]:
    return tuple(as_check(item, f"checks[{i}]") for i, item in enumerate(value))


def _unique(checks: Sequence[InstructionCheck], where: str) -> None:
    seen: set[str] = set()
    for check in checks:
        if check.label in seen:
            raise ValueError(f"{where}: two checks are named {check.label!r}; give them "
                             "distinct names (name = ...)")
        seen.add(check.label)


@attrs.frozen(kw_only=True)
class InstructionsOptions:
    """Options of the ``instructions`` judge.

    :param checks: the checks every sample gets (``[[components.NAME.checks]]`` tables).
    :param metadata_key: a sample's own checks are read from ``sample.metadata[key]`` (a
        list of check tables, as IFEval gives each prompt its instructions); ``""``: none.
    """

    checks: tuple[InstructionCheck, ...] = attrs.field(default=(), converter=_checks)
    metadata_key: str = attrs.field(default="instructions", validator=v.instance_of(str))

    def __attrs_post_init__(self) -> None:
        _unique(self.checks, "checks")


@attrs.frozen
class CheckResult:
    """The outcome of one check: ``passed`` and why."""

    passed: bool
    rationale: str


def _unfenced(text: str) -> str:
    stripped = text.strip()
    match = _FENCED.match(stripped)
    return match.group(1).strip() if match else stripped


def _count(check: InstructionCheck, n: int, what: str) -> CheckResult:
    if check.exactly is not None:
        return CheckResult(n == check.exactly, f"{n} {what}, expected exactly {check.exactly}")
    low = check.at_least if check.at_least is not None else 0
    high = check.at_most
    ok = n >= low and (high is None or n <= high)
    wanted = " and ".join(part for part in (
        f"at least {check.at_least}" if check.at_least is not None else "",
        f"at most {high}" if high is not None else "") if part)
    return CheckResult(ok, f"{n} {what}, expected {wanted}")


def count_sentences(text: str) -> int:
    """Sentences: runs of text ending in ``.``, ``!`` or ``?`` (before space or the end),
    plus a final unterminated piece that holds a word."""
    pieces = _SENTENCE_END.split(text)
    return sum(1 for piece in pieces if _WORDS.search(piece))


def _contains(text: str, keyword: str, case_sensitive: bool) -> bool:
    """Whether ``keyword`` occurs as whole words; the white space between its words matches
    any run of white space (a phrase wrapped over two lines is still there)."""
    flags = 0 if case_sensitive else re.IGNORECASE
    pattern = r"\s+".join(re.escape(word) for word in keyword.split()) or re.escape(keyword)
    return re.search(rf"(?<!\w){pattern}(?!\w)", text, flags) is not None


def _not_json(constant: str) -> Any:
    """``parse_constant`` of :func:`json.loads`: ``NaN`` and ``Infinity`` are Python's,
    not JSON's (RFC 8259; ``JSON.parse`` refuses them)."""
    raise ValueError(f"{constant} is not a JSON value")


def run_check(check: InstructionCheck, text: str) -> CheckResult:
    """Run one check on ``text``."""
    kind = check.kind
    if kind in ("json", "json_schema"):
        try:
            document = json.loads(_unfenced(text), parse_constant=_not_json)
        except ValueError as exc:
            return CheckResult(False, f"not valid JSON: {exc}")
        if check.schema is None:
            return CheckResult(True, "valid JSON")
        validator = _jsonschema().validators.validator_for(check.schema)(check.schema)
        errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
        if errors:
            first = errors[0]
            where = "/".join(str(p) for p in first.absolute_path) or "(root)"
            return CheckResult(False, f"{len(errors)} schema error(s); at {where}: "
                                      f"{first.message}")
        return CheckResult(True, "valid JSON matching the schema")
    if kind == "words":
        return _count(check, len(_WORDS.findall(text)), "words")
    if kind == "sentences":
        return _count(check, count_sentences(text), "sentences")
    if kind == "paragraphs":
        paragraphs = [p for p in _PARAGRAPH_BREAK.split(text) if p.strip()]
        return _count(check, len(paragraphs), "paragraphs")
    if kind == "bullets":
        return _count(check, len(_BULLET.findall(text)), "bullet points")
    if kind in ("keywords", "forbidden"):
        found = [k for k in check.keywords if _contains(text, k, check.case_sensitive)]
        if kind == "keywords":
            missing = [k for k in check.keywords if k not in found]
            return CheckResult(not missing, f"missing {missing}" if missing
                               else f"all of {list(check.keywords)} present")
        return CheckResult(not found, f"forbidden {found} present" if found
                           else f"none of {list(check.keywords)} present")
    if kind == "lowercase":
        ok = text == text.lower() and any(c.isalpha() for c in text)
        return CheckResult(ok, "all lower case" if ok else "has upper-case letters or none")
    if kind == "uppercase":
        ok = text == text.upper() and any(c.isalpha() for c in text)
        return CheckResult(ok, "all upper case" if ok else "has lower-case letters or none")
    phrase = check.phrase or ""
    body = text.strip()
    if not check.case_sensitive:
        body, phrase = body.lower(), phrase.lower()
    ok = body.endswith(phrase) if kind == "ends_with" else body.startswith(phrase)
    verb = "ends" if kind == "ends_with" else "starts"
    return CheckResult(ok, f"{verb} with {check.phrase!r}" if ok
                       else f"does not {verb[:-1]} with {check.phrase!r}")


class InstructionsJudge:
    """Scores verifiable instructions: each check gives ``instruction.<name>``, 1.0 when
    the output passes and 0.0 when not, the rationale saying what was found; with more
    than one check, ``instruction.all`` is 1.0 when every check passed (IFEval's strict
    prompt-level accuracy). A sample with no check (none in the options, none in its
    metadata) gets ``None``.

    :param options: the typed options (no checks when ``None``: samples bring theirs).
    """

    def __init__(self, options: InstructionsOptions | None = None) -> None:
        self.options = options if options is not None else InstructionsOptions()

    def checks_for(self, sample: Sample) -> list[InstructionCheck]:
        """The options' checks and the sample's own; a sample's check named as an option's
        (``words`` and ``words``) replaces it for that sample: the item is the specific one.

        :raises ValueError: a sample's check table is malformed, or two of its own checks
            share a name (naming the sample).
        """
        checks = list(self.options.checks)
        key = self.options.metadata_key
        own = sample.metadata.get(key) if key else None
        if own is not None:
            where = f"sample {sample.id or '(no id)'} metadata[{key!r}]"
            if not isinstance(own, list | tuple):
                raise ValueError(f"{where}: expected a list of check tables, got {own!r}")
            mine = [as_check(item, f"{where}[{i}]") for i, item in enumerate(own)]
            _unique(mine, where)
            labels = {check.label for check in mine}
            checks = [check for check in checks if check.label not in labels] + mine
        return checks

    @hookimpl
    def aieng_judge(self, sample: Sample) -> list[Score] | None:
        """One score per check, and ``instruction.all`` for several; ``None`` without
        checks."""
        checks = self.checks_for(sample)
        if not checks:
            return None
        results = [(check, run_check(check, sample.output)) for check in checks]
        scores = [Score(name=check.label, value=1.0 if result.passed else 0.0,
                        rationale=result.rationale) for check, result in results]
        if len(results) > 1:
            failed = [check.label for check, result in results if not result.passed]
            scores.append(Score(name="instruction.all", value=0.0 if failed else 1.0,
                                rationale=f"failed: {', '.join(failed)}" if failed
                                else f"all {len(results)} checks passed"))
        return scores
