"""The quiz in words and the occlusion question's picture (:mod:`featapp.stats.quiz`).

The sentences say only what the scan's numbers show: which photo's value is larger, the two
values and their ranks among the scanned photos, and the student's score; the occlusion
question's reveal gives each marked square's probability with it grey.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from featapp.render.describe import box_words
from featapp.render.pictures import enlarge
from featapp.stats.quiz import ChannelQuiz, OcclusionQuestion, QuizQuestion, Side

__all__ = [
    "MARK_RGB",
    "quiz_intro",
    "value_words",
    "question_prompt",
    "reveal_words",
    "final_words",
    "occlusion_prompt",
    "occlusion_reveal",
    "occlusion_alt",
    "mark_patches",
]

MARK_RGB = (255, 214, 0)
"""The squares' outline and the letters' background: a yellow that stands out on most photos
(with a black edge for the bright ones); the letters are black on it."""


def _ordinal_rank(rank: int) -> str:
    return f"number {rank + 1:,}"


def value_words(by: str) -> str:
    """What the quiz compares: the strongest cell (``"max"``) or the whole map's mean.

    >>> value_words("max"), value_words("mean")
    ('its strongest cell', 'its mean over the whole map')
    """
    return "its strongest cell" if by == "max" else "its mean over the whole map"


def quiz_intro(quiz: ChannelQuiz, layer_number: int) -> str:
    """How the quiz was made, for the top of the quiz (Markdown).

    >>> from featapp.stats.quiz import draw_channel_quiz
    >>> quiz = draw_channel_quiz(np.arange(1000.0), 42, layer="conv2d_3", channel=4)
    >>> quiz_intro(quiz, 7)[:86]
    'Ten questions about **layer 7 (conv2d_3), channel 5**. In each, one photo is among the'
    """
    count = len(quiz.questions)
    words = {10: "Ten"}.get(count, str(count))
    top, middle = quiz.top_ranks, quiz.middle_ranks
    left_out = (
        f" The {top.start} photos ranked above them are the channel's top photos above: they are your evidence, "
        "so none of them is asked about."
        if top.start
        else ""
    )
    return (
        f"{words} questions about **layer {layer_number} ({quiz.layer}), channel {quiz.channel + 1}**. In each, "
        f"one photo is among the channel's strongest of the {quiz.photos:,} scanned photos (ranks {top.start + 1:,} "
        f"to {top.stop:,}) and the other from the middle (ranks {middle.start + 1:,} to {middle.stop:,}), ranked "
        f"by {value_words(quiz.by)}; which is on the left is drawn by the quiz number.{left_out} All questions stay "
        "on this one channel, so what its top photos and its picture show is what you predict from, as in "
        "Borowski et al.'s experiment (ICLR 2021)."
    )


def question_prompt(number: int, count: int, layer_number: int, channel: int) -> str:
    """The question (``number`` from 1, ``channel`` from 0).

    >>> question_prompt(3, 10, 7, 4)
    'Question 3 of 10: which photo drives layer 7, channel 5 harder?'
    """
    return f"Question {number} of {count}: which photo drives layer {layer_number}, channel {channel + 1} harder?"


def reveal_words(question: QuizQuestion, choice: Side, photos: int, by: str) -> str:
    """Right or wrong, and the two values with their ranks (Markdown).

    >>> from featapp.stats.quiz import QuizPhoto
    >>> q = QuizQuestion(QuizPhoto(3, 499, 0.25), QuizPhoto(8, 11, 2.5))
    >>> print(reveal_words(q, "right", 1000, "max"))
    **Right.** The right photo drives this channel harder: its strongest cell is **2.5** (number 12 of 1,000 \
scanned photos), the left photo's **0.25** (number 500).
    """
    verdict = "**Right.**" if question.is_right(choice) else "**Not this time.**"
    strong, weak = question.stronger, question.weaker
    other = "left" if question.answer == "right" else "right"
    return (
        f"{verdict} The {question.answer} photo drives this channel harder: {value_words(by)} is "
        f"**{strong.value:.3g}** ({_ordinal_rank(strong.rank)} of {photos:,} scanned photos), the {other} photo's "
        f"**{weak.value:.3g}** ({_ordinal_rank(weak.rank)})."
    )


def final_words(score: int, count: int) -> str:
    """The final score, and what guessing would give (the only comparison the numbers support).

    >>> final_words(8, 10)
    '**Your score: 8 of 10.** Tossing a coin gets 5 of 10 on average.'
    """
    return f"**Your score: {score} of {count}.** Tossing a coin gets {count / 2:g} of {count} on average."


def occlusion_prompt(question: OcclusionQuestion) -> str:
    """The occlusion question (Markdown).

    >>> from featapp.stats.quiz import PatchChoice
    >>> q = OcclusionQuestion((PatchChoice("A", 0, 0, (0, 0, 20, 20), 0.3, 0.6),), "A", "dog", 0.9, 20, 196)
    >>> occlusion_prompt(q)[:76]
    'The model says **p(dog) = 0.900** for this photo. Each letter marks a 20 x 2'
    """
    letters = ", ".join(c.letter for c in question.choices)
    return (
        f"The model says **p({question.class_name}) = {question.base_probability:.3f}** for this photo. Each letter "
        f"marks a {question.patch} x {question.patch} square ({letters}). **Which square, painted grey, lowers "
        f"p({question.class_name}) most?**"
    )


def _change_words(drop: float) -> str:
    """A change in probability in words, to three decimals.

    >>> _change_words(0.2304), _change_words(-0.03), _change_words(0.0002)
    ('a drop of 0.230', 'a rise of 0.030', 'no change to three decimals')
    """
    if abs(drop) < 0.0005:
        return "no change to three decimals"
    return f"a drop of {drop:.3f}" if drop > 0 else f"a rise of {-drop:.3f}"


def occlusion_reveal(question: OcclusionQuestion, letter: str) -> str:
    """Right or wrong, and each square's probability with it grey (Markdown, one line a square).

    Three decimals, not two: for a photo the model is sure of, every square leaves p at "1.00".
    """
    verdict = "**Right.**" if question.is_right(letter) else "**Not this time.**"
    name = question.class_name
    best = question.choice(question.answer)
    lines = [
        f"{verdict} Square **{question.answer}** lowers p({name}) most: from {question.base_probability:.3f} to "
        f"{best.probability:.3f}, the largest drop of all {question.positions} squares the occlusion map tried.",
        "",
    ]
    for choice in question.choices:
        mark = " (your answer)" if choice.letter == letter else ""
        lines.append(
            f"- **{choice.letter}**{mark}: p({name}) {choice.probability:.3f} with it grey, "
            f"{_change_words(choice.drop)} ({box_words(choice.box)})"
        )
    return "\n".join(lines)


def occlusion_alt(question: OcclusionQuestion) -> str:
    """Alt text for the photo with its lettered squares.

    >>> from featapp.stats.quiz import PatchChoice
    >>> q = OcclusionQuestion((PatchChoice("A", 0, 0, (0, 0, 20, 20), 0.3, 0.6),), "A", "dog", 0.9, 20, 196)
    >>> occlusion_alt(q)
    'The photo with one yellow square, each marked with its letter: A at input rows 1-20 and columns 1-20.'
    """
    places = "; ".join(f"{c.letter} at {box_words(c.box)}" for c in question.choices)
    squares = "one yellow square" if len(question.choices) == 1 else f"{len(question.choices)} yellow squares"
    return f"The photo with {squares}, each marked with its letter: {places}."


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def mark_patches(
    image: np.ndarray, boxes: Sequence[tuple[str, tuple[int, int, int, int]]], *, factor: int = 3
) -> np.ndarray:
    """The photo enlarged ``factor`` times, each ``(letter, box)`` outlined in :data:`MARK_RGB`
    with its letter in the box's top-left corner (black on yellow).

    >>> marked = mark_patches(np.zeros((30, 30, 3), np.uint8), [("A", (0, 0, 10, 10))], factor=2)
    >>> marked.shape, marked[18, 15].tolist(), marked[19, 15].tolist()   # the bottom edge: yellow, then black
    ((60, 60, 3), [255, 214, 0], [0, 0, 0])
    """
    photo = image if image.shape[2] == 3 else np.repeat(image, 3, axis=2)
    canvas = Image.fromarray(enlarge(photo, factor))
    draw = ImageDraw.Draw(canvas)
    font = _font(max(10, 6 * factor))
    for letter, (top, left, bottom, right) in boxes:
        y0, x0, y1, x1 = top * factor, left * factor, bottom * factor - 1, right * factor - 1
        draw.rectangle((x0, y0, x1, y1), outline=(0, 0, 0), width=factor + 2)
        draw.rectangle((x0 + 1, y0 + 1, x1 - 1, y1 - 1), outline=MARK_RGB, width=factor)
        label = draw.textbbox((0, 0), letter, font=font)
        width, height = label[2] - label[0] + 2 * factor, label[3] - label[1] + 2 * factor
        draw.rectangle((x0 + 1, y0 + 1, x0 + width, y0 + height), fill=MARK_RGB, outline=(0, 0, 0))
        draw.text((x0 + 1 + factor - label[0], y0 + 1 + factor - label[1]), letter, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)
