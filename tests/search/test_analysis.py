"""`search.analysis`: the terms keyword search matches, made in the application per language."""

from knowledge.models import Language
from search.analysis import STEMMERS, analyze, tokens


def test_english_lowercases_stems_and_drops_stop_words_and_possessives():
    assert analyze("The Keeper's lamps are Retrieving information", language="english") == "keeper lamp retriev inform"


def test_the_same_word_forms_give_the_same_term():
    forms = {analyze(word, language="english") for word in ("retrieval", "retrieve", "retrieving", "retrieved")}
    assert forms == {"retriev"}


def test_han_characters_are_one_term_each():
    assert analyze("信息检索 systems", language="none") == "信 息 检 索 systems"


def test_other_languages_use_their_own_stemmer():
    assert analyze("chevaux", language="french") == analyze("cheval", language="french")
    assert analyze("chevaux", language="english") != analyze("cheval", language="english")


def test_without_stemming_words_stay_as_written_in_lower_case():
    assert analyze("Running RUNS", language="none") == "running runs"


def test_tokens_keep_their_offsets_in_the_original_text():
    text = "Keeper's lamp"
    assert [(text[start:end], term) for start, end, term in tokens(text, language="english")] == [
        ("Keeper", "keeper"), ("lamp", "lamp"),
    ]


def test_every_knowledge_base_language_has_an_analysis():
    assert set(Language.values) == set(STEMMERS)
