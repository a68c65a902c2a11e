"""The analyzers: aieng_v2 cuts Chinese, Japanese and Korean into characters and every
other script exactly as aieng_en_v1; an index keeps the analyzer it was made with.

What aieng_v2 makes of text is specified here by a regex of Unicode properties (WORDS_V2,
tantivy's regex tokenizer); the index gets the same words faster, from aieng_en_v1's
tokenizer over the text with spaces around its CJK characters (_index._split_cjk).
"""

from __future__ import annotations

import random
import re
import unicodedata
from pathlib import Path

import aieng_bm25._index as index_module
import attrs
import pytest
import tantivy
from aieng_bm25 import ANALYZER, ANALYZERS, MEMORY, BM25Index, BM25Options
from aieng_bm25._fields import dump_metadata, id_key
from aieng_hookspecs.types import Document, Hit
from hypothesis import example, given, settings
from hypothesis import strategies as st

# Alphanumeric characters of these Unicode names are Chinese, Japanese or Korean (Han,
# hiragana, katakana, hangul scripts, and the prolonged sound mark): aieng_v2 makes each
# one a word; every other alphanumeric character is cut into words as aieng_en_v1 does.
CJK_NAMES = re.compile(
    r"(CJK (UNIFIED|COMPATIBILITY) IDEOGRAPH|(HALFWIDTH )?(HANGUL|HIRAGANA|KATAKANA)"
    r"|HENTAIGANA|HANGZHOU NUMERAL|(VERTICAL )?IDEOGRAPHIC (ITERATION|NUMBER)"
    r"|OLD CHINESE|VIETNAMESE ALTERNATE READING|CHINESE SMALL|YANGQIN)")

ZH = Document("zh", "自然语言处理是人工智能的一个分支，研究计算机如何理解人类语言。",
              title="自然语言处理")
JA = Document("ja", "東京は日本の首都であり、世界有数の大都市です。", title="首都について")
KO = Document("ko", "서울에서 열리는 학회에 참석했습니다.", title="학회")
LONG = Document("long", "中华人民共和国国家统计局发布了二零二三年国民经济和社会发展统计公报")
MIXED = Document("mixed", "Pythonは人気のあるプログラミング言語です。NumPyで行列を計算する。",
                 title="Pythonの紹介")
EN = Document("en", "Laminar flows over flat plates at high speeds.", title="Flat plates")
DOCS = [ZH, JA, KO, LONG, MIXED, EN,
        Document("noise", "人类社会的一个工业分支，智能与能力。处理数据。", title="其他")]

# The specification of aieng_v2's words. aieng_en_v1's are runs of the characters Rust
# calls alphanumeric (char::is_alphanumeric: Unicode Alphabetic, or a number: Nd, Nl,
# No); aieng_v2's are the same, except that every CJK character (Han, hiragana, katakana,
# hangul; the kana marks ー ｰ ﾞ ﾟ) is a word of its own. Rust's std knows Unicode 17,
# tantivy's regex crate Unicode 16: the alphanumeric characters new in 17 are named here
# (the Han among them also in CJK).
NEW_HAN = r"\x{16FF2}-\x{16FF6}\x{2B73A}-\x{2B73F}\x{2CEA2}-\x{2CEAD}\x{323B0}-\x{33479}"
NEW_ALNUM = (
    r"\x{88F}\x{C5C}\x{CDC}\x{A7CE}-\x{A7CF}\x{A7D2}\x{A7D4}\x{A7F1}\x{10940}-\x{10959}"
    r"\x{10EC5}-\x{10EC7}\x{10EFA}-\x{10EFB}\x{11B60}-\x{11B67}\x{11DB0}-\x{11DDB}"
    r"\x{11DE0}-\x{11DE9}\x{16EA0}-\x{16EB8}\x{16EBB}-\x{16ED3}\x{187F8}-\x{187FF}"
    r"\x{18D09}-\x{18D1E}\x{18D80}-\x{18DF2}\x{1E6C0}-\x{1E6DE}\x{1E6E0}-\x{1E6F5}"
    r"\x{1E6FE}-\x{1E6FF}" + NEW_HAN)
ALNUM = r"\p{Alphabetic}\p{Nd}\p{Nl}\p{No}" + NEW_ALNUM
CJK = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}\x{30FC}\x{FF70}\x{FF9E}\x{FF9F}" + NEW_HAN
#: aieng_v2's words: a run of alphanumeric characters other than CJK, or one CJK character.
WORDS_V2 = rf"[[{ALNUM}]--[{CJK}]]+|[[{ALNUM}]&&[{CJK}]]"
#: A run of adjacent CJK characters (their neighbouring pairs are the query's phrases).
CJK_RUNS = rf"[[{ALNUM}]&&[{CJK}]]+"
#: Every code point but the surrogates, separated by spaces.
EVERY = " ".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)


def words(name: str, text: str) -> list[str]:
    """The bare words (no filters) that the analyzer ``name`` makes of ``text``, as the
    index cuts them."""
    simple = tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple()).build()
    return simple.analyze(index_module._split_cjk(text) if name == "aieng_v2" else text)


def specified(pattern: str, text: str) -> list[str]:
    """The matches of the regex ``pattern`` in ``text`` (tantivy's regex tokenizer)."""
    return tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.regex(pattern)).build().analyze(text)


def spec_analyzer() -> tantivy.TextAnalyzer:
    """aieng_v2 as specified: WORDS_V2, then the filters of both analyzers."""
    return (tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.regex(WORDS_V2))
            .filter(tantivy.Filter.remove_long(40))
            .filter(tantivy.Filter.lowercase())
            .filter(tantivy.Filter.ascii_fold())
            .filter(tantivy.Filter.stopword("english"))
            .filter(tantivy.Filter.stemmer("english"))
            .build())


def terms(name: str, text: str) -> list[str]:
    """The terms of ``text`` with the analyzer ``name`` (a new index's)."""
    return BM25Index(BM25Options(path=MEMORY, analyzer=name)).terms(text)


def ids(hits: list[Hit]) -> list[str]:
    """The document ids of hits, in order."""
    return [h.document.id for h in hits]


# -- what each analyzer makes of text ----------------------------------------------------


def test_v2_keeps_the_characters_v1_keeps() -> None:
    """Over every code point, aieng_v2 keeps exactly the characters aieng_en_v1 keeps
    (Rust's alphanumeric ones), and so does the specification: its Unicode tables miss
    none."""
    old = words("aieng_en_v1", EVERY)
    assert len(old) > 140_000
    assert words("aieng_v2", EVERY) == old
    assert specified(WORDS_V2, EVERY) == old


def test_v2_words_are_the_specified_ones() -> None:
    """Every code point, alone or next to any other: aieng_v2's words and its runs of CJK
    characters (the query's pairs) are the specification's, which the index's exact list
    of CJK characters (_index._CJK) therefore matches."""
    touching = EVERY.replace(" ", "")
    for text in (EVERY, touching, touching[::-1]):
        assert words("aieng_v2", text) == specified(WORDS_V2, text)
        assert index_module._CJK_RUNS.findall(text) == specified(CJK_RUNS, text)
    assert len(index_module._CJK_RUNS.findall(EVERY)) > 100_000


def test_v2_splits_cjk_characters_and_nothing_else() -> None:
    """Every alphanumeric character between two Latin letters: a CJK one is a word of its
    own (so the Latin letters are words too), any other stays inside the one word, as in
    aieng_en_v1. Checked for every character this Python's Unicode database names."""
    alnum = words("aieng_en_v1", EVERY)
    cut = iter(words("aieng_v2", " ".join(f"a{c}a" for c in alnum)))
    split, kept = [], []
    for c in alnum:
        word = next(cut)
        if word == f"a{c}a":
            kept.append(c)
        else:
            assert [word, next(cut), next(cut)] == ["a", c, "a"]
            split.append(c)
    assert next(cut, None) is None
    named = [c for c in split if unicodedata.name(c, "")]
    assert len(named) > 100_000  # Han, kana, hangul
    assert [c for c in named if not CJK_NAMES.match(unicodedata.name(c))] == []
    assert [c for c in kept if CJK_NAMES.match(unicodedata.name(c, ""))] == []
    # The filters leave a CJK character as it is: the query's pairs of adjacent characters
    # are the index terms their phrase queries look for.
    assert terms("aieng_v2", " ".join(split)) == split


@pytest.mark.parametrize("text", [
    "The Investigations of Slipstreams AND flows, 1958-1962: x² ½ ①.",
    "Naïve café in Zürich; ÆRO ΑΕΡΟΔΥΝΑΜΙΚΗ πτέρυγα Аэродинамика крыла.",
    "مرحبا بالعالم שלום עולם नमस्ते दुनिया ภาษาไทยไม่มีช่องว่าง ພາສາລາວ ខ្មែរ",
    "ＦＵＬＬＷＩＤＴＨ ｌａｔｉｎ １２３ e\u0301 İstanbul ß ﬁ 🛩️ a_b a-b a.b a'b",
    "x" * 41 + " " + "ÿ" * 21 + " word",
])
def test_v2_analyzes_other_scripts_as_v1(text: str) -> None:
    """Latin, Greek, Cyrillic, Arabic, Hebrew, Devanagari, Thai, full-width letters,
    digits, long words: the same terms with both analyzers (stemmed, stopwords dropped,
    accents folded, words over 40 bytes dropped)."""
    assert terms("aieng_v2", text) == terms("aieng_en_v1", text)
    assert terms("aieng_en_v1", text)
    assert terms("aieng_v2", text) == spec_analyzer().analyze(text)


@settings(max_examples=300, deadline=None)
@given(st.text() | st.text(st.characters(max_codepoint=127)))
@example("The Investigations of Slipstreams AND flows 1958")
@example("naïve 東京は Pythonで x\ud800y")
def test_terms_are_the_v2_analyzers(text: str) -> None:
    """``terms`` (aieng_en_v1's tokenizer over the text with spaces around its CJK
    characters) gives what the specified aieng_v2 analyzer gives, for any text."""
    index = BM25Index(BM25Options(path=MEMORY))
    assert index.terms(text) == spec_analyzer().analyze(index_module._utf8(text))


def test_v2_terms_of_cjk_text() -> None:
    """Each CJK character is a term, Latin words around it stay English words."""
    index = BM25Index(BM25Options(path=MEMORY))
    assert index.analyzer == ANALYZER == "aieng_v2"
    assert index.terms("人工智能") == ["人", "工", "智", "能"]
    assert index.terms("東京はコンピューター") == ["東", "京", "は", "コ", "ン", "ピ", "ュ", "ー",
                                               "タ", "ー"]
    assert index.terms("서울에서") == ["서", "울", "에", "서"]
    assert index.terms("Pythonは2つのLanguagesで") == ["python", "は", "2", "つ", "の",
                                                     "languag", "で"]
    assert len(index.terms(LONG.text)) == len(LONG.text)


def test_v1_terms_are_unchanged() -> None:
    """aieng_en_v1, still there for old indexes (and on request), cuts as it always did: a
    run of CJK characters is one word, dropped over 40 bytes."""
    index = BM25Index(BM25Options(path=MEMORY, analyzer="aieng_en_v1"))
    assert index.analyzer == "aieng_en_v1"
    assert index.terms("人工智能 Pythonは") == ["人工智能", "pythonは"]
    assert index.terms(LONG.text) == []


def test_scripts_without_spaces_other_than_cjk_are_not_cut_into_words() -> None:
    """The documented limitation (README, "Analyzers"): Thai, Lao, Khmer and Burmese are
    cut by both analyzers only at characters that are not letters or digits (a tone mark,
    a virama, some vowel signs), and a fragment over 40 bytes is dropped. Should a later
    analyzer segment them, this test says the README must change too."""
    for name in ANALYZERS:
        index = BM25Index(BM25Options(path=MEMORY, analyzer=name))
        assert index.terms("ພາສາລາວ") == ["ພາສາລາວ"]  # Lao: a whole run is one term
        assert index.terms("ภาษาไทยเป็นภาษาที่สวยงาม") == ["ภาษาไทยเป", "นภาษาที", "สวยงาม"]
        assert index.terms("ភាសាខ្មែរ") == ["ភាសាខ", "មែរ"]  # Khmer, cut at the coeng
        # 15 Thai characters before the first tone mark: 45 bytes, dropped.
        assert index.terms("กรุงเทพมหานครเป็นเมือง") == ["นเมือง"]
        index.add([Document("th", "ภาษาไทยเป็นภาษาที่สวยงาม")])
        assert index.search("ภาษาไทย", 5) == []  # a word inside a fragment is not found


# -- searching CJK text ------------------------------------------------------------------


@pytest.fixture(params=["tantivy", "impacts"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> BM25Index:
    """A new index on disk (the default analyzer) holding DOCS, with either scorer."""
    built = BM25Index(BM25Options(path=str(tmp_path / "idx"), scorer=request.param))
    assert built.add(DOCS) == len(DOCS)
    return built


@pytest.mark.parametrize(("query", "expected"), [
    ("人工智能", "zh"),            # a word inside a longer run
    ("语言", "zh"),
    ("首都", "ja"),
    ("東京", "ja"),
    ("大都市", "ja"),
    ("서울", "ko"),                # a Korean word with a particle attached (서울에서)
    ("학회", "ko"),
    ("国民经济", "long"),          # inside a run of 31 characters
    ("统计公报", "long"),
    ("プログラミング", "mixed"),    # katakana inside mixed Latin and Japanese text
    ("python", "mixed"),           # a Latin word attached to Japanese
    ("NumPy 行列", "mixed"),
    ("laminar plate", "en"),
])
def test_cjk_words_are_found(index: BM25Index, query: str, expected: str) -> None:
    """A query finds the document holding it first, wherever the word stands in a run of
    CJK characters, also when a document with the same characters scattered competes."""
    assert ids(index.search(query, 3))[0] == expected


def test_long_cjk_run_is_indexed(index: BM25Index) -> None:
    """A run of 31 Han characters (which aieng_en_v1 dropped whole) is indexed: every one
    of its characters finds it."""
    for char in "华共和统计":
        assert "long" in ids(index.search(char, 10))


def test_cjk_pairs_search_the_same_with_both_scorers(tmp_path: Path) -> None:
    """A query with adjacent CJK characters (its pairs are phrase queries, which need the
    positions) goes to tantivy with ``scorer = "impacts"`` too: the same hits and scores;
    one without such pairs is answered by the impacts."""
    plain = BM25Index(BM25Options(path=str(tmp_path / "t")))
    impacts = BM25Index(BM25Options(path=str(tmp_path / "i"), scorer="impacts"))
    for built in (plain, impacts):
        built.add(DOCS)
    for query in ("人工智能", "東京 首都", "서울 python"):
        assert [(h.document.id, h.score) for h in impacts.search(query, 10)] == [
            (h.document.id, h.score) for h in plain.search(query, 10)]
    assert impacts._pairs("人工智能 東京") == ["人工", "工智", "智能", "東京"]
    assert impacts._pairs("人 python") == []
    assert set(ids(impacts.search("人 python", 10))) == {"mixed", "zh", "noise", "long"}


def test_reopened_index_searches_the_same(tmp_path: Path) -> None:
    """A new index made with aieng_v2 reopens with it (the default options) and answers
    the same; a write after reopening is analyzed the same way."""
    folder = str(tmp_path / "idx")
    first = BM25Index(BM25Options(path=folder))
    first.add(DOCS)
    before = [(h.document.id, h.score) for h in first.search("人工智能 python", 5)]
    first.close()
    again = BM25Index(BM25Options(path=folder, analyzer="aieng_en_v1"))  # ignored: kept
    assert again.analyzer == "aieng_v2"
    assert [(h.document.id, h.score) for h in again.search("人工智能 python", 5)] == before
    again.add([Document("new", "机器学习是人工智能的核心")])
    assert ids(again.search("机器学习", 1)) == ["new"]


def test_v2_documents_come_back_as_written(tmp_path: Path) -> None:
    """aieng_v2 indexes a text with spaces around its CJK characters, but stores it as
    written: a hit or ``get`` read from the store (no document table, or after reopening)
    is the document indexed, empty title and text included."""
    folder = str(tmp_path / "idx")
    empty = Document("empty", "", metadata={"k": "値"})
    index = BM25Index(BM25Options(path=folder, document_cache=0))
    index.add([*DOCS, empty])
    assert [h.document for h in index.search("東京", 1)] == [JA]
    index.close()
    again = BM25Index(BM25Options(path=folder))
    assert again.analyzer == "aieng_v2"
    assert [again.get(doc.id) for doc in (*DOCS, empty)] == [*DOCS, empty]
    assert [h.document for h in again.search("Python 言語", 1)] == [MIXED]


# -- indexes made with aieng_en_v1 -------------------------------------------------------


def _old_release_index(folder: Path, documents: list[Document]) -> None:
    """An index as the release before aieng_v2 wrote it: its schema and analyzer, copied
    here (not taken from the module) so that a change there cannot hide a break."""
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("id", stored=True, tokenizer_name="raw", index_option="basic")
    builder.add_text_field("key", stored=False, tokenizer_name="raw", index_option="basic")
    builder.add_text_field("title", stored=True, tokenizer_name="aieng_en_v1")
    builder.add_text_field("text", stored=True, tokenizer_name="aieng_en_v1")
    builder.add_bytes_field("metadata", stored=True)
    builder.add_text_field("filter", stored=False, tokenizer_name="raw", index_option="basic")
    builder.add_unsigned_field("row", stored=False, indexed=False, fast=True)
    folder.mkdir()
    index = tantivy.Index(builder.build(), path=str(folder))
    index.register_tokenizer("aieng_en_v1", (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.ascii_fold())
        .filter(tantivy.Filter.stopword("english"))
        .filter(tantivy.Filter.stemmer("english"))
        .build()))
    writer = index.writer(heap_size=15_000_000, num_threads=1)
    for doc in documents:
        row = tantivy.Document()
        row.add_text("id", doc.id)
        row.add_text("key", id_key(doc.id))
        row.add_text("title", doc.title)
        row.add_text("text", doc.text)
        row.add_bytes("metadata", dump_metadata(doc.id, doc.metadata))
        row.add_unsigned("row", random.getrandbits(63))
        writer.add_document(row)
    writer.commit()
    writer.wait_merging_threads()


@pytest.mark.parametrize("made", ["old release", "option"])
@pytest.mark.parametrize("scorer", ["tantivy", "impacts"])
def test_v1_index_opens_and_answers_as_before(tmp_path: Path, made: str, scorer: str
                                              ) -> None:
    """An index made with aieng_en_v1 (by the release before aieng_v2, or by asking for
    it) opens with the default options, keeps its analyzer, and answers as it did: CJK
    runs match whole only, English as always; writes go through aieng_en_v1 too."""
    folder = tmp_path / "old"
    if made == "old release":
        _old_release_index(folder, DOCS)
    else:
        BM25Index(BM25Options(path=str(folder), analyzer="aieng_en_v1")).add(DOCS)
    index = BM25Index(BM25Options(path=str(folder), scorer=scorer))
    assert index.analyzer == "aieng_en_v1"
    assert len(index) == len(DOCS)
    assert index.terms("人工智能") == ["人工智能"]
    assert ids(index.search("東京", 5)) == []  # a part of a run: not found, as before
    assert ids(index.search("東京は日本の首都であり", 5)) == ["ja"]
    assert ids(index.search("서울", 5)) == []
    assert ids(index.search("laminar plate", 5)) == ["en"]
    assert index.get("zh") == ZH
    index.add([Document("zh", "人工智能", title="新")])  # an upsert, cut by aieng_en_v1
    assert ids(index.search("人工智能", 5)) == ["zh"]
    assert index.delete(["en"]) == 1 and ids(index.search("laminar", 5)) == []
    index.close()
    assert BM25Index(BM25Options(path=str(folder))).analyzer == "aieng_en_v1"


def test_schema_of_neither_analyzer_is_refused(tmp_path: Path) -> None:
    """An index whose fields go through an analyzer this plugin does not know fails to
    open, naming the analyzers it knows."""
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("id", stored=True, tokenizer_name="raw", index_option="basic")
    builder.add_text_field("text", stored=True, tokenizer_name="aieng_en_v0")
    tantivy.Index(builder.build(), path=str(tmp_path))
    with pytest.raises(ValueError, match="another schema.*aieng_v2, aieng_en_v1.*new folder"):
        BM25Index(BM25Options(path=str(tmp_path))).open()


# -- the option --------------------------------------------------------------------------


def test_analyzer_option() -> None:
    """``analyzer`` names one of the analyzers; the default is the newest."""
    assert ANALYZERS == ("aieng_v2", "aieng_en_v1")
    assert BM25Options(path=MEMORY).analyzer == "aieng_v2"
    assert attrs.evolve(BM25Options(path=MEMORY), analyzer="aieng_en_v1").analyzer == (
        "aieng_en_v1")
    with pytest.raises(ValueError, match="analyzer must be one of 'aieng_v2', 'aieng_en_v1'"):
        BM25Options(path=MEMORY, analyzer="standard")
    with pytest.raises(TypeError, match="analyzer must be a string"):
        BM25Options(path=MEMORY, analyzer=2)  # type: ignore[arg-type]
