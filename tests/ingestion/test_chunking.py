"""chunk_text(): paragraphs, then sentences, then words; about target tokens; sentence overlap."""

import time
from itertools import pairwise

import pytest
from django.test import override_settings

from ingestion.chunking import chunk_sections, chunk_text
from ingestion.extraction.types import Section, Table


def sentence(n: int, words: int = 9) -> str:
    """A distinct sentence of `words` words plus a full stop (words + 1 tokens)."""
    return " ".join(f"s{n}w{i}" for i in range(words)) + "."


def paragraphs(count: int, sentences_each: int) -> str:
    return "\n\n".join(" ".join(sentence(p * sentences_each + s) for s in range(sentences_each)) for p in range(count))


def test_empty_or_whitespace_text_gives_no_chunks():
    assert chunk_text("", "Title") == []
    assert chunk_text(" \n\n\t ", "Title") == []


def test_short_text_is_one_chunk_without_the_title():
    (chunk,) = chunk_text("Only one sentence here.", "My title")
    assert (chunk.position, chunk.text, chunk.token_count) == (0, "Only one sentence here.", 5)


def test_token_count_counts_words_and_punctuation():
    (chunk,) = chunk_text("Hello, world! It's 2024.", "")
    assert chunk.token_count == 9  # Hello , world ! It ' s 2024 .


def test_chunks_stay_within_target_and_number_from_zero():
    chunks = chunk_text(paragraphs(6, 8), "", target_tokens=50, overlap=0.2)
    assert [chunk.position for chunk in chunks] == list(range(len(chunks)))
    assert all(chunk.token_count <= 50 for chunk in chunks)
    assert all(chunk.token_count == 10 * chunk.text.count(".") for chunk in chunks)  # whole 10-token sentences


def test_every_sentence_lands_in_some_chunk():
    text = paragraphs(5, 7)
    chunks = chunk_text(text, "", target_tokens=40, overlap=0.15)
    for n in range(35):
        assert any(sentence(n) in chunk.text for chunk in chunks), n


def test_chunk_text_is_the_slice_at_its_offsets():
    text = "  Lead para.\n\n" + paragraphs(4, 6) + "\n"
    for chunk in chunk_text(text, "", target_tokens=30, overlap=0.15):
        assert text[chunk.char_start : chunk.char_end] == chunk.text


def test_overlap_repeats_whole_trailing_sentences():
    # 10-token sentences, target 50, overlap 0.2 -> budget 10 -> exactly the last sentence carried.
    chunks = chunk_text(" ".join(sentence(n) for n in range(20)), "", target_tokens=50, overlap=0.2)
    for previous, current in pairwise(chunks):
        last_sentence = previous.text.rsplit(". ", 1)[-1]
        assert current.text.startswith(last_sentence)
        assert current.char_start < previous.char_end


def test_zero_overlap_gives_disjoint_chunks():
    chunks = chunk_text(paragraphs(4, 8), "", target_tokens=40, overlap=0)
    for previous, current in pairwise(chunks):
        assert current.char_start >= previous.char_end


def test_chunks_prefer_ending_at_a_paragraph():
    # Paragraphs of 40 tokens, target 50: a sentence of the next paragraph would still fit,
    # but a chunk 80% full ends where its paragraph ends.
    text = paragraphs(3, 4)
    chunks = chunk_text(text, "", target_tokens=50, overlap=0)
    assert [chunk.text for chunk in chunks] == text.split("\n\n")


def test_overlong_sentence_is_split_by_words():
    text = " ".join(f"word{i}" for i in range(500))  # one "sentence", no punctuation
    chunks = chunk_text(text, "", target_tokens=100, overlap=0.1)
    assert len(chunks) >= 5
    assert all(chunk.token_count <= 100 for chunk in chunks)
    assert chunks[0].text.startswith("word0 ") and chunks[-1].text.endswith("word499")
    # Overlap falls back to trailing words when no whole sentence fits.
    assert chunks[1].char_start < chunks[0].char_end


def test_output_is_deterministic():
    text = paragraphs(8, 6)
    assert chunk_text(text, "t", target_tokens=64) == chunk_text(text, "t", target_tokens=64)


@override_settings(KB_CHUNK_TOKENS=20, KB_CHUNK_OVERLAP=0)
def test_defaults_come_from_settings():
    chunks = chunk_text(paragraphs(1, 10), "")
    assert len(chunks) == 5
    assert all(chunk.token_count == 20 for chunk in chunks)


@pytest.mark.parametrize(("target", "overlap"), [(0, 0.1), (100, 1.0), (100, -0.1)])
def test_invalid_parameters_are_rejected(target, overlap):
    with pytest.raises(ValueError):
        chunk_text("text.", "", target_tokens=target, overlap=overlap)


def test_a_megabyte_chunks_in_well_under_a_second():
    text = paragraphs(3000, 5)  # ~1.1 MB
    started = time.perf_counter()
    chunks = chunk_text(text, "")
    assert time.perf_counter() - started < 1.0
    assert len(chunks) > 500


def test_sections_are_chunked_apart_and_keep_their_location_and_heading():
    pages = [Section(paragraphs(3, 8), {"page": 1}, "Intro"), Section("Short page two.", {"page": 2}, "Intro > Scope")]
    chunks = chunk_sections(pages, target_tokens=40, overlap=0)
    assert [chunk.position for chunk in chunks] == list(range(len(chunks)))
    assert chunks[-1].text == "Short page two."
    assert (chunks[-1].location, chunks[-1].heading) == ({"page": 2}, "Intro > Scope")
    assert all(chunk.location == {"page": 1} and "Short" not in chunk.text for chunk in chunks[:-1])


def test_a_table_is_chunked_by_whole_rows_with_its_header_in_every_chunk():
    rows = tuple(f"item {n} | {n * 10} | owner {n}" for n in range(40))
    table = Section("", {"sheet": "Budget"}, "Budget", Table("Item | Cost | Owner", rows, first_row=5))
    chunks = chunk_sections([table], target_tokens=60)
    assert len(chunks) > 2
    assert all(chunk.text.startswith("Item | Cost | Owner\nitem ") for chunk in chunks)
    assert all(chunk.token_count <= 60 for chunk in chunks)
    ranges = [chunk.location["rows"] for chunk in chunks]
    assert ranges[0][0] == 5 and ranges[-1][1] == 44  # the sheet's own row numbers
    assert all(later[0] == earlier[1] + 1 for earlier, later in pairwise(ranges))  # no row lost or repeated
    assert {chunk.location["sheet"] for chunk in chunks} == {"Budget"}
    first, last = ranges[0]
    assert chunks[0].text.split("\n")[1:] == list(rows[: last - first + 1])
