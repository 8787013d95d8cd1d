"""Cutting a streamed reply into sentences as it arrives."""

from __future__ import annotations

import pytest

from chat.sentences import SentenceSplitter, split_sentences


def _char_by_char(text: str, min_chars: int = 1) -> list[str]:
    return list(split_sentences(list(text), min_chars=min_chars))


def test_sentences_end_at_latin_marks_followed_by_space():
    text = "Hello there. How are you? I am fine! Thanks."
    assert _char_by_char(text) == ["Hello there.", "How are you?", "I am fine!", "Thanks."]


def test_each_sentence_is_yielded_as_soon_as_it_is_certain():
    splitter = SentenceSplitter(min_chars=1)
    assert list(splitter.feed("The first one")) == []
    # A dot at the very end may still become "3.14": wait for what follows.
    assert list(splitter.feed(".")) == []
    assert list(splitter.feed(" The sec")) == ["The first one."]
    assert list(splitter.feed("ond one.\n")) == ["The second one."]
    assert list(splitter.feed("A tail without end")) == []
    assert list(splitter.flush()) == ["A tail without end"]


@pytest.mark.parametrize(
    "text",
    [
        "Pi is about 3.14 and e is about 2.72, both irrational.",
        "Take fruit, e.g. apples or pears, to the party tonight.",
        "I asked Dr. Smith and Mrs. Jones about it yesterday.",
        "The letter was signed by J. R. Tolkien himself, apparently.",
        "See example.com/page.html for the details of it.",
        "Costs vs. benefits, i.e. the usual trade-off, matter here.",
    ],
)
def test_numbers_abbreviations_and_initials_do_not_end_a_sentence(text):
    assert _char_by_char(text) == [text]


def test_chinese_marks_end_sentences_without_spaces():
    text = "你好。今天天气很好！你想聊什么？"
    assert _char_by_char(text) == ["你好。", "今天天气很好！", "你想聊什么？"]


def test_ellipsis_and_runs_of_marks_stay_with_their_sentence():
    text = "Well… let me think. Really?! Yes... I am sure."
    assert _char_by_char(text) == ["Well…", "let me think.", "Really?!", "Yes...", "I am sure."]


def test_closing_quotes_stay_with_their_sentence():
    assert _char_by_char('He said "stop." Then he left.') == ['He said "stop."', "Then he left."]


def test_newlines_end_sentences_and_blank_lines_vanish():
    assert _char_by_char("First line\n\nSecond line\n") == ["First line", "Second line"]


def test_short_pieces_merge_with_what_follows():
    text = "Yes. Of course. I would be glad to help you with that. Ok."
    assert list(split_sentences([text], min_chars=20)) == [
        "Yes. Of course. I would be glad to help you with that.",
        "Ok.",  # the reply's last piece goes out whatever its length
    ]


def test_pieces_of_any_size_give_the_same_sentences():
    text = "One sentence here. Another one follows! 第三句话。 And 3.5 more? Done."
    expected = list(split_sentences([text], min_chars=5))
    for size in (1, 2, 3, 7, 100):
        pieces = [text[i : i + size] for i in range(0, len(text), size)]
        assert list(split_sentences(pieces, min_chars=5)) == expected
    assert expected == ["One sentence here.", "Another one follows!", "第三句话。", "And 3.5 more?", "Done."]


def test_empty_and_whitespace_replies_yield_nothing():
    assert list(split_sentences([])) == []
    assert list(split_sentences(["  ", "\n"])) == []


# --- a quick first piece (first_min_chars) --------------------------------------------------------------

REPLY = "Hello there, I am Ada. It is lovely to meet you today, and I hope you are well. Bye now."


def test_the_first_piece_may_end_at_a_clause_mark_and_only_the_first():
    assert list(split_sentences([REPLY], min_chars=20, first_min_chars=10)) == [
        "Hello there,",  # the rest of its sentence is short: it joins the next one
        "I am Ada. It is lovely to meet you today, and I hope you are well.",
        "Bye now.",
    ]
    assert list(split_sentences([REPLY], min_chars=20)) == [  # off: whole sentences
        "Hello there, I am Ada.",
        "It is lovely to meet you today, and I hope you are well.",
        "Bye now.",
    ]


def test_the_first_clause_goes_out_as_soon_as_what_follows_the_mark_is_seen():
    splitter = SentenceSplitter(min_chars=20, first_min_chars=10)
    assert list(splitter.feed("Hello there,")) == []  # "," may still be "1,000"
    assert list(splitter.feed(" I a")) == ["Hello there,"]


@pytest.mark.parametrize(
    ("text", "first"),
    [
        ("Well, that is a good question to ask.", "Well, that is a good question to ask."),  # "Well," < 10
        ("It costs 1,000 dollars: quite a lot of money.", "It costs 1,000 dollars:"),
        ("At 12:30 we meet, then we go to the park.", "At 12:30 we meet,"),
        ("Yes. Of course, I can help you with that.", "Yes. Of course,"),  # "Yes." alone is too short
        ("A short one. Then a clause, and more.", "A short one. Then a clause,"),
        ("你好，我是艾达，很高兴见到你，今天天气很好。", "你好，我是艾达，很高兴见到你，"),
    ],
)
def test_clause_marks_inside_numbers_or_too_early_do_not_cut(text, first):
    pieces = [text[i : i + 3] for i in range(0, len(text), 3)]
    assert next(iter(split_sentences(pieces, min_chars=20, first_min_chars=10))) == first
