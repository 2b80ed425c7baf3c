"""Predict, then reveal (issue 29): the One-neuron page's quiz, drawn from the library
(:mod:`featapp.stats.quiz` for the questions, :mod:`featapp.render.quiz` for the words and
the lettered squares). Two parts: "which photo drives this channel harder?" over a scanned
split, ten questions with a running score; and "which grey square lowers the model's answer
most?" on the current image, from its occlusion map.

**The quiz number in the URL.** A class gets the same questions from the same seed: the page
keeps it in the URL's ``quiz`` parameter (``?quiz=1234``) and in this session. Only
:func:`url_seed` and :func:`set_url_seed` touch ``st.query_params``, and only that key, so
other URL parameters (a shared view) live beside it. A malformed ``quiz`` value (not a
number, negative, too long, given twice) is reported in words and replaced by a fresh seed.

The session-state keys are this page's own (``neuron.quiz_*``); nothing here is shared with
another page.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from featapp import render
from featapp.app import caches, chrome
from featapp.app.appstate import CurrentImage
from featapp.app.captions import markdown_literal
from featapp.data.dataset import Dataset
from featapp.engine.geometry import receptive_box
from featapp.engine.metadata import LayerInfo
from featapp.engine.model import FeatureModel
from featapp.render import quiz as words
from featapp.render.colours import ColourScale
from featapp.render.describe import box_words, describe_map, map_alt, summarise_map
from featapp.stats.analysis import NeuronStats
from featapp.stats.quiz import (
    ChannelQuiz,
    QuizProgress,
    QuizUnavailable,
    SeedReading,
    Side,
    channel_quiz,
    fresh_seed,
    occlusion_question,
    read_seed,
)

__all__ = [
    "QUIZ_PARAM",
    "SEED_KEY",
    "PROGRESS_KEY",
    "OCCLUSION_KEY",
    "url_seed",
    "set_url_seed",
    "quiz_seed",
    "new_quiz",
    "channel_quiz_section",
    "occlusion_quiz_section",
]

QUIZ_PARAM = "quiz"
"""The URL's query parameter that carries the quiz number."""
SEED_KEY = "neuron.quiz_seed"
"""This session's quiz number (an int)."""
PROGRESS_KEY = "neuron.quiz_progress"
"""``{quiz identity: QuizProgress}``: where the student is in each quiz (seed, scan, layer, channel, ranking)."""
OCCLUSION_KEY = "neuron.quiz_occlusion"
"""``{(seed, model, image): letter}``: the student's answer to each occlusion question."""
PHOTO_PX = 300
"""How wide each photo of a question is shown (the model's 150 pixels, doubled)."""
SIDES: tuple[Side, Side] = ("left", "right")


# -- the quiz number in the URL ------------------------------------------------------------------------------


def url_seed() -> SeedReading:
    """The URL's ``quiz`` values, read (:func:`featapp.stats.quiz.read_seed`); never raises."""
    return read_seed(st.query_params.get_all(QUIZ_PARAM))


def set_url_seed(seed: int) -> None:
    """Put ``seed`` in the URL's ``quiz`` parameter (other parameters stay as they are)."""
    if st.query_params.get_all(QUIZ_PARAM) != [str(seed)]:
        st.query_params[QUIZ_PARAM] = str(seed)


def quiz_seed() -> tuple[int, str | None]:
    """This session's quiz number, and what was wrong with the URL's, if anything.

    The URL's number wins (a link from the instructor); without one the session keeps its own,
    or draws a fresh one; either way the URL then shows it, so it can be shared."""
    reading = url_seed()
    if reading.seed is not None:
        st.session_state[SEED_KEY] = reading.seed
        return reading.seed, None
    seed = st.session_state.get(SEED_KEY)
    if not isinstance(seed, int):
        seed = fresh_seed()
        st.session_state[SEED_KEY] = seed
    set_url_seed(seed)
    return seed, reading.problem


def new_quiz() -> None:
    """A new quiz number, in this session and the URL (a button's ``on_click``)."""
    seed = fresh_seed(avoid=st.session_state.get(SEED_KEY))
    st.session_state[SEED_KEY] = seed
    set_url_seed(seed)


# -- which photo drives this channel harder? ---------------------------------------------------------------


def _progress(identity: tuple) -> QuizProgress:
    return st.session_state.setdefault(PROGRESS_KEY, {}).get(identity, QuizProgress())


def _answer(identity: tuple, choice: Side, count: int) -> None:
    st.session_state.setdefault(PROGRESS_KEY, {})[identity] = _progress(identity).answer(choice, count)


def _next(identity: tuple) -> None:
    st.session_state.setdefault(PROGRESS_KEY, {})[identity] = _progress(identity).next()


def _again(identity: tuple) -> None:
    st.session_state.setdefault(PROGRESS_KEY, {}).pop(identity, None)


def _new_quiz_button() -> None:
    st.button(
        "New quiz (a new quiz number for the link)",
        key="neuron.quiz_new",
        on_click=new_quiz,
        help="Draws another quiz number and puts it in the page's address, to share with the class.",
    )


def channel_quiz_section(
    model: FeatureModel,
    data: Dataset | None,
    split: str | None,
    layer: LayerInfo,
    channel: int,
    by: str,
    scale: ColourScale,
) -> None:
    """The ten-question quiz about ``channel`` (0-based) of ``layer``, from the scan of ``split``."""
    layer_number = model.layer_names.index(layer.name) + 1
    st.subheader("Predict, then reveal: which photo drives this channel harder?")
    seed, problem = quiz_seed()
    if problem is not None:
        st.warning(f"{markdown_literal(problem)} Here is quiz {seed} instead.")
    if data is None or split is None:
        st.info("The quiz draws its photos from a scanned dataset split, and there is no dataset here.")
        return
    stats = caches.neuron_stats(model, data, split)
    if stats is None:
        st.info(
            f"The quiz draws its photos from a scan of the {split} split, which has not been scanned with this model "
            "yet. Choose **a whole dataset split** under *Rank* at the top of this page and scan it first; then the "
            "quiz is here."
        )
        return
    try:
        quiz = channel_quiz(stats, layer.name, channel, seed, by)
    except QuizUnavailable as err:
        st.info(str(err))
        return
    st.markdown(words.quiz_intro(quiz, layer_number))
    st.caption(
        f"Quiz number **{seed}** (in this page's address as `?{QUIZ_PARAM}={seed}`). Everyone who opens that "
        "address, on the same layer, channel, ranking and scanned split, gets the same ten questions in the "
        "same order."
    )
    _new_quiz_button()
    identity = (seed, model.sha256, stats.dataset_fingerprint, split, layer.name, channel, by)
    progress = _progress(identity)
    count = len(quiz.questions)
    if progress.finished(count) and not progress.revealed:
        _finished(quiz, progress, identity)
        return
    _question(model, stats, quiz, progress, identity, layer, layer_number, scale)


def _question(
    model: FeatureModel,
    stats: NeuronStats,
    quiz: ChannelQuiz,
    progress: QuizProgress,
    identity: tuple,
    layer: LayerInfo,
    layer_number: int,
    scale: ColourScale,
) -> None:
    count = len(quiz.questions)
    number = progress.current
    question = quiz.questions[number]
    paths = [stats.paths[question.left.index], stats.paths[question.right.index]]
    st.markdown(f"**{words.question_prompt(number + 1, count, layer_number, quiz.channel)}**")
    if progress.revealed:
        _reveal(model, stats, quiz, progress, identity, layer, scale, paths)
        return
    kept, pixels = caches.photos(model, paths)
    if len(kept) < 2:
        st.error("A photo of this question can no longer be read (the dataset changed): scan the split again.")
        return
    columns = st.columns(2)
    for side, column, path, photo in zip(SIDES, columns, paths, pixels, strict=True):
        with column:
            chrome.show_image(
                render.enlarge(photo, 2),
                caption=f"The {side} photo: {markdown_literal(Path(path).name)}",
                width=PHOTO_PX,
                alt=f"The {side} photo of question {number + 1}: {Path(path).name}.",
            )
            st.button(
                f"The {side} one drives it harder",
                key=f"neuron.quiz_{side}",
                on_click=_answer,
                args=(identity, side, count),
                type="primary",
            )
    if progress.answers:
        st.caption(f"Score so far: {quiz.score(progress.answers)} of {len(progress.answers)}.")


def _reveal(
    model: FeatureModel,
    stats: NeuronStats,
    quiz: ChannelQuiz,
    progress: QuizProgress,
    identity: tuple,
    layer: LayerInfo,
    scale: ColourScale,
    paths: list[Path],
) -> None:
    count = len(quiz.questions)
    question = quiz.questions[progress.current]
    choice = progress.answers[-1]
    kept, pixels, maps = caches.channel_maps(model, paths, layer.name, quiz.channel)
    if len(kept) < 2:
        st.error("A photo of this question can no longer be read (the dataset changed): scan the split again.")
        return
    st.markdown(words.reveal_words(question, choice, quiz.photos, quiz.by))
    shared = render.shared_range(*maps)
    value_name = quiz.by
    columns = st.columns(2)
    for side, column, path, photo, values in zip(SIDES, columns, paths, pixels, maps, strict=True):
        shown = question.photo(side)
        name = Path(path).name
        row, col = (int(v) for v in np.unravel_index(int(np.argmax(values)), values.shape))
        box = (
            receptive_box(layer.receptive_field, row, col, (photo.shape[0], photo.shape[1]))
            if layer.receptive_field is not None
            else None
        )
        mark = "your answer, " if side == choice else ""
        with column:
            chrome.show_image(
                render.enlarge(render.outline_box(photo, box) if box else photo, 2),
                caption=f"The {side} photo ({mark}{value_name} {shown.value:.3g}): {markdown_literal(name)}",
                width=PHOTO_PX,
                alt=f"The {side} photo, {name}"
                + (f", with a red box around {box_words(box)}: what its strongest cell sees." if box else "."),
            )
            st.image(
                render.map_png(values, shared, scale, min_px=200),
                caption=f"Its map of channel {quiz.channel + 1}: {value_name} {shown.value:.3g}, "
                f"number {shown.rank + 1:,} of {quiz.photos:,}",
                width=PHOTO_PX,
                output_format="PNG",
                alt=map_alt(
                    f"Channel {quiz.channel + 1}'s map for the {side} photo", summarise_map(values, shared, scale)
                ),
            )
    st.caption(f"Both maps share one scale. {render.describe_range(shared, scale)}")
    answered = len(progress.answers)
    st.markdown(f"Score: **{quiz.score(progress.answers)} of {answered}** answered.")
    if answered < count:
        st.button("Next question", key="neuron.quiz_next", on_click=_next, args=(identity,), type="primary")
    else:
        _finished(quiz, progress, identity)


def _finished(quiz: ChannelQuiz, progress: QuizProgress, identity: tuple) -> None:
    count = len(quiz.questions)
    st.markdown(words.final_words(quiz.score(progress.answers), count))
    marks = ", ".join(
        f"{number}: {'right' if question.is_right(choice) else 'wrong'}"
        for number, (question, choice) in enumerate(zip(quiz.questions, progress.answers, strict=False), start=1)
    )
    st.caption(f"Question by question: {marks}.")
    st.button("Take this quiz again", key="neuron.quiz_again", on_click=_again, args=(identity,))


# -- which grey square lowers the model's answer most? ----------------------------------------------------------


def _answer_square(key: tuple, letter: str) -> None:
    st.session_state.setdefault(OCCLUSION_KEY, {})[key] = letter


def occlusion_quiz_section(model: FeatureModel, image: CurrentImage) -> None:
    """The occlusion question on the current image, with this session's quiz number."""
    st.subheader("Predict, then reveal: which grey square lowers the model's answer most?")
    if caches.prediction(model, image) is None:
        st.info("This question needs the model's prediction, and this model has no classifier.")
        return
    st.markdown(
        f"Occlusion paints one square of the current image, **{markdown_literal(image.title)}**, grey and asks the "
        "model again. Before you see the occlusion map, guess which of the marked squares matters most to its answer."
    )
    if not caches.has_occlusion(model, image) and not st.button(
        "Make the question for the current image (a few seconds)", key="neuron.quiz_occlusion_start"
    ):
        return
    with st.spinner("Covering the photo square by square..."):
        occlusion = caches.occlusion(model, image)
    caches.mark_occlusion(model, image)
    seed, _ = quiz_seed()  # the problem with a bad link, if any, is told by the channel quiz above
    try:
        question = occlusion_question(occlusion, seed, image.key)
    except QuizUnavailable as err:
        st.info(str(err))
        return
    key = (seed, model.sha256, image.key)
    choice = st.session_state.get(OCCLUSION_KEY, {}).get(key)
    st.markdown(words.occlusion_prompt(question))
    boxes = [(c.letter, c.box) for c in question.choices]
    photo_col, answer_col = st.columns([1, 1])
    if choice is None:
        with photo_col:
            chrome.show_image(
                words.mark_patches(image.array, boxes),
                caption="The photo with the squares to choose from",
                width=PHOTO_PX + 150,
                alt=words.occlusion_alt(question),
            )
        with answer_col:
            for c in question.choices:
                st.button(
                    f"Square {c.letter}",
                    key=f"neuron.quiz_square_{c.letter}",
                    on_click=_answer_square,
                    args=(key, c.letter),
                )
        return
    drop = occlusion.per_pixel()
    drop_range = render.value_range(drop, "per map")
    overlay = render.overlay_pixels(image.array, drop, drop_range, render.VIRIDIS, alpha=0.45)
    summary = summarise_map(drop, drop_range, render.VIRIDIS)
    with photo_col:
        chrome.show_image(
            words.mark_patches(overlay, boxes),
            caption=f"The occlusion map: drop in p({question.class_name}) laid over the photo, with the squares",
            width=PHOTO_PX + 150,
            alt=f"{words.occlusion_alt(question)} Over it, the drop in p({question.class_name}) when each area "
            f"is covered. {describe_map(summary).replace('colour level', 'brightness level')}",
        )
    with answer_col:
        st.markdown(words.occlusion_reveal(question, choice))
    st.caption(
        f"Each pixel of the map shows the mean drop of the {occlusion.patch} x {occlusion.patch} squares that "
        f"covered it. {render.describe_range(drop_range, render.VIRIDIS)} Negative values: covering that area "
        "made the model *more* sure."
    )
