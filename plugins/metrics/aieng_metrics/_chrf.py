"""chrF and chrF++, sacrebleu-compatible (``sacrebleu.metrics.CHRF`` and its defaults).

Character n-grams of orders 1..6 (whitespace removed), optionally word n-grams (chrF++:
``word_order=2``), F-beta with beta 2, averaged over the orders the segment has n-grams
of (sacrebleu >= 2.0's default, ``eps_smoothing=False``). Scores equal sacrebleu's to the
last bit. What makes it faster: beyond a few dozen characters, the character n-grams of a
pair are counted in one pass of numpy (exact integer keys, one ``np.unique``) instead of
twelve Counters.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

__all__ = ["corpus_chrf", "sentence_chrf"]

#: Texts this long together (characters) count their n-grams with numpy; shorter ones
#: with Counters, cheaper below it.
_NUMPY_MIN_CHARS = 64
_PUNCTS = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def _split_punctuation(sentence: str) -> list[str]:
    # chrF++'s word tokenization: one leading or trailing punctuation mark split off.
    words: list[str] = []
    for word in sentence.split():
        if len(word) == 1:
            words.append(word)
        elif word[-1] in _PUNCTS:
            words += [word[:-1], word[-1]]
        elif word[0] in _PUNCTS:
            words += [word[0], word[1:]]
        else:
            words.append(word)
    return words


def _char_ngrams(chars: str, order: int) -> list[Counter[str]]:
    grams = [Counter(chars)]
    for n in range(2, order + 1):
        grams.append(Counter([chars[i:i + n] for i in range(len(chars) - n + 1)]))
    return grams


def _word_ngrams(text: str, order: int) -> list[Counter[str]]:
    words = _split_punctuation(text)
    return [Counter([" ".join(words[i:i + n]) for i in range(len(words) - n + 1)])
            for n in range(1, order + 1)]


def _match(hyp_grams: list[Counter[str]], ref_grams: list[Counter[str]]) -> list[int]:
    stats: list[int] = []
    for hyp, ref in zip(hyp_grams, ref_grams):
        matched = 0
        for gram, count in hyp.items():
            if gram in ref:
                other = ref[gram]
                # a conditional, not min() / max(): no call in the hot loop
                matched += count if count < other else other  # noqa: FURB136
        stats += [sum(hyp.values()) if ref else 0, sum(ref.values()), matched]
    return stats


def _char_statistics_numpy(hyp: str, ref: str, order: int) -> list[int] | None:
    """The character n-gram statistics of :func:`_match` computed with numpy: characters
    become dense ids, each n-gram one exact integer key (its ids in ``bits``-bit fields,
    its order in the top bits), and one ``np.unique`` over both texts' keys gives every
    count. ``None`` when the keys would not fit 60 bits (more than 2^(60 / order)
    distinct characters): the caller falls back to Counters."""
    import numpy as np

    hl, rl = len(hyp), len(ref)
    codes = np.frombuffer((hyp + ref).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    distinct, ids = np.unique(codes, return_inverse=True)
    bits = max(1, len(distinct).bit_length())
    if bits * order > 60:
        return None
    ids = ids.astype(np.int64)

    def keys(x: Any, length: int) -> Any:
        parts = []
        key = None
        for n in range(1, order + 1):
            m = length - n + 1
            if m <= 0:
                break
            key = x[:m].copy() if key is None else (key[:m] << bits) | x[n - 1:n - 1 + m]
            parts.append(key | (n << 60))
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    hyp_keys, ref_keys = keys(ids[:hl], hl), keys(ids[hl:], rl)
    unique, inverse = np.unique(np.concatenate([hyp_keys, ref_keys]), return_inverse=True)
    in_hyp = np.bincount(inverse[:len(hyp_keys)], minlength=len(unique))
    in_ref = np.bincount(inverse[len(hyp_keys):], minlength=len(unique))
    per_order = np.bincount(unique >> 60, weights=np.minimum(in_hyp, in_ref),
                            minlength=order + 1)  # float64: exact below 2^53
    stats: list[int] = []
    for n in range(1, order + 1):
        hyp_n, ref_n = max(hl - n + 1, 0), max(rl - n + 1, 0)
        stats += [hyp_n if ref_n else 0, ref_n, int(per_order[n])]
    return stats


def _f_score(stats: Sequence[int], order: int, beta: float, eps_smoothing: bool) -> float:
    eps = 1e-16
    score = 0.0
    effective_order = 0
    factor = beta ** 2
    avg_prec, avg_rec = 0.0, 0.0
    for i in range(order):
        n_hyp, n_ref, n_match = stats[3 * i: 3 * i + 3]
        prec = n_match / n_hyp if n_hyp > 0 else eps
        rec = n_match / n_ref if n_ref > 0 else eps
        denom = factor * prec + rec
        score += ((1 + factor) * prec * rec / denom) if denom > 0 else eps
        if n_hyp > 0 and n_ref > 0:
            avg_prec += prec
            avg_rec += rec
            effective_order += 1
    if eps_smoothing:
        return 100 * score / order
    if effective_order == 0:
        avg_prec = avg_rec = 0.0
    else:
        avg_prec /= effective_order
        avg_rec /= effective_order
    if avg_prec + avg_rec:
        score = (1 + factor) * avg_prec * avg_rec
        score /= (factor * avg_prec) + avg_rec
        return 100 * score
    return 0.0


def _segment_statistics(hypothesis: str, references: str | Sequence[str], char_order: int,
                        word_order: int, beta: float, lowercase: bool, whitespace: bool,
                        eps_smoothing: bool) -> list[int]:
    if not isinstance(hypothesis, str):
        raise TypeError(f"a hypothesis must be str, got {type(hypothesis).__name__}")
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise ValueError("chrF needs at least one reference per hypothesis")
    order = char_order + word_order
    hyp_text = hypothesis.lower() if lowercase else hypothesis
    hyp_chars = hyp_text if whitespace else "".join(hyp_text.split())
    hyp_char_grams: list[Counter[str]] | None = None
    hyp_word_grams = _word_ngrams(hyp_text, word_order) if word_order else []
    best: list[int] = []
    best_f = -1.0
    for ref in refs:
        if not isinstance(ref, str):
            raise TypeError(f"a reference must be str, got {type(ref).__name__}")
        ref_text = ref.lower() if lowercase else ref
        ref_chars = ref_text if whitespace else "".join(ref_text.split())
        stats = None
        if char_order <= 7 and len(hyp_chars) + len(ref_chars) >= _NUMPY_MIN_CHARS:
            stats = _char_statistics_numpy(hyp_chars, ref_chars, char_order)
        if stats is None:
            if hyp_char_grams is None:
                hyp_char_grams = _char_ngrams(hyp_chars, char_order)
            stats = _match(hyp_char_grams, _char_ngrams(ref_chars, char_order))
        if word_order:
            stats += _match(hyp_word_grams, _word_ngrams(ref_text, word_order))
        f_score = _f_score(stats, order, beta, eps_smoothing)
        if f_score > best_f:
            best_f, best = f_score, stats
    return best


def sentence_chrf(hypothesis: str, references: str | Sequence[str], *, char_order: int = 6,
                  word_order: int = 0, beta: float = 2, lowercase: bool = False,
                  whitespace: bool = False, eps_smoothing: bool = False) -> float:
    """chrF (0-100) of one hypothesis, equal to ``CHRF().sentence_score`` with the same
    options; with several references the one giving the best F counts (as sacrebleu).

    :param char_order: the longest character n-gram.
    :param word_order: the longest word n-gram (2 makes chrF++).
    :param beta: recall's weight relative to precision.
    :param lowercase: compare case-insensitively.
    :param whitespace: keep whitespace inside character n-grams.
    :param eps_smoothing: chrF++.py's epsilon smoothing instead of the effective order.
    """
    order = char_order + word_order
    stats = _segment_statistics(hypothesis, references, char_order, word_order, beta,
                                lowercase, whitespace, eps_smoothing)
    return _f_score(stats, order, beta, eps_smoothing)


def corpus_chrf(hypotheses: Sequence[str], references: Sequence[str | Sequence[str]], *,
                char_order: int = 6, word_order: int = 0, beta: float = 2,
                lowercase: bool = False, whitespace: bool = False,
                eps_smoothing: bool = False) -> float:
    """Corpus chrF (0-100), equal to ``CHRF().corpus_score``: the statistics of every
    segment are summed, then one F is taken. ``references[i]`` holds the reference(s) of
    ``hypotheses[i]`` (sacrebleu takes reference streams instead).

    :raises ValueError: when the lists differ in length or are empty.
    """
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise TypeError("corpus_chrf takes a list of hypotheses and a list of references")
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("corpus_chrf needs at least one hypothesis")
    order = char_order + word_order
    sums = [0] * (3 * order)
    for hyp, refs in zip(hypotheses, references):
        for i, value in enumerate(_segment_statistics(hyp, refs, char_order, word_order, beta,
                                                      lowercase, whitespace, eps_smoothing)):
            sums[i] += value
    return _f_score(sums, order, beta, eps_smoothing)
