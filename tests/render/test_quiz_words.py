"""The quiz in words and the lettered squares (featapp.render.quiz): each sentence states what
the numbers say (which photo is stronger, the values and ranks, the score), and the picture
marks exactly the squares the question names."""

from __future__ import annotations

import numpy as np
import pytest

from featapp.render.quiz import (
    MARK_RGB,
    final_words,
    mark_patches,
    occlusion_alt,
    occlusion_prompt,
    occlusion_reveal,
    question_prompt,
    quiz_intro,
    reveal_words,
)
from featapp.stats.quiz import OcclusionQuestion, PatchChoice, QuizPhoto, QuizQuestion, draw_channel_quiz

QUESTION = QuizQuestion(QuizPhoto(index=3, rank=499, value=0.25), QuizPhoto(index=8, rank=11, value=2.5))


def test_the_reveal_says_right_or_wrong_and_gives_both_values_and_ranks():
    right = reveal_words(QUESTION, "right", 1000, "max")
    wrong = reveal_words(QUESTION, "left", 1000, "max")
    assert right.startswith("**Right.**") and wrong.startswith("**Not this time.**")
    for text in (right, wrong):
        assert "The right photo drives this channel harder" in text
        assert "**2.5** (number 12 of 1,000 scanned photos)" in text and "**0.25** (number 500)" in text
    assert "its mean over the whole map is **2.5**" in reveal_words(QUESTION, "right", 1000, "mean")
    flipped = QuizQuestion(QUESTION.right, QUESTION.left)
    assert reveal_words(flipped, "left", 1000, "max").startswith("**Right.** The left photo")


def test_the_intro_names_the_ranks_the_photos_come_from():
    quiz = draw_channel_quiz(np.arange(1000.0), 42, layer="conv2d_3", channel=4)
    text = quiz_intro(quiz, 7)
    assert "**layer 7 (conv2d_3), channel 5**" in text
    assert "ranks 11 to 60" in text and "ranks 401 to 600" in text and "1,000 scanned photos" in text
    assert "The 10 photos ranked above them" in text  # the shown top photos are left out
    small = draw_channel_quiz(np.arange(24.0), 42, layer="conv2d", channel=0)
    assert "ranks 1 to 10" in quiz_intro(small, 1) and "ranked above them" not in quiz_intro(small, 1)


def test_prompt_and_final_score():
    assert question_prompt(1, 10, 1, 0) == "Question 1 of 10: which photo drives layer 1, channel 1 harder?"
    assert final_words(7, 10) == "**Your score: 7 of 10.** Tossing a coin gets 5 of 10 on average."


OCCLUSION = OcclusionQuestion(
    choices=(
        PatchChoice("A", 0, 0, (0, 0, 20, 20), 0.012, 0.878),
        PatchChoice("B", 5, 6, (50, 60, 70, 80), 0.4104, 0.4796),
        PatchChoice("C", 12, 1, (120, 10, 140, 30), -0.03, 0.92),
    ),
    answer="B",
    class_name="dog",
    base_probability=0.89,
    patch=20,
    positions=196,
)


def test_the_occlusion_question_and_its_reveal():
    assert "**p(dog) = 0.890**" in occlusion_prompt(OCCLUSION) and "(A, B, C)" in occlusion_prompt(OCCLUSION)
    reveal = occlusion_reveal(OCCLUSION, "A").split("\n")
    assert reveal[0] == (
        "**Not this time.** Square **B** lowers p(dog) most: from 0.890 to 0.480, the largest drop of all 196 "
        "squares the occlusion map tried."
    )
    assert reveal[2:] == [
        "- **A** (your answer): p(dog) 0.878 with it grey, a drop of 0.012 (input rows 1-20 and columns 1-20)",
        "- **B**: p(dog) 0.480 with it grey, a drop of 0.410 (input rows 51-70 and columns 61-80)",
        "- **C**: p(dog) 0.920 with it grey, a rise of 0.030 (input rows 121-140 and columns 11-30)",
    ]
    assert occlusion_reveal(OCCLUSION, "B").startswith("**Right.**")
    assert occlusion_alt(OCCLUSION).count(" at input rows ") == 3


@pytest.mark.parametrize("factor", [1, 3])
def test_the_squares_are_drawn_where_the_question_says(factor):
    photo = np.full((150, 150, 3), 90, np.uint8)
    marked = mark_patches(photo, [(c.letter, c.box) for c in OCCLUSION.choices], factor=factor)
    assert marked.shape == (150 * factor, 150 * factor, 3)
    yellow = np.all(marked == MARK_RGB, axis=2)
    for choice in OCCLUSION.choices:
        top, left, bottom, right = (v * factor for v in choice.box)
        # The bottom edge is yellow; the middle of the square is the photo, untouched.
        assert yellow[bottom - 2, (left + right) // 2]
        assert (marked[(top + bottom) // 2 + 2, (left + right) // 2 + 2] == 90).all()
        # The letter's label: dark text pixels on yellow in the top-left corner.
        corner = marked[top : top + 8 * factor, left : left + 8 * factor]
        assert np.all(corner == MARK_RGB, axis=2).any() and (corner.max(axis=2) < 60).any()
    # Nothing outside the squares changed.
    outside = np.ones((150 * factor, 150 * factor), bool)
    for choice in OCCLUSION.choices:
        top, left, bottom, right = (v * factor for v in choice.box)
        outside[top:bottom, left:right] = False
    assert (marked[outside] == 90).all()
