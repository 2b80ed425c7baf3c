"""The One-neuron page's quiz in AppTest, on the committed model and 24 scanned photos (12 a
class of the test split): the questions are the library's for the link's quiz number, ten
answers give a running and a final score, the same link gives the same questions in a new
session, a bad link gives a message and a new number, a scan too small or a channel that
never fires says why, and the occlusion question reveals the map and the numbers."""

from __future__ import annotations

import re

import numpy as np
import pytest

from featapp.app.appstate import CurrentImage, get_current, set_current
from featapp.app.quiz import QUIZ_PARAM
from featapp.data.dataset import Dataset
from featapp.engine.images import prepare_image
from featapp.explain.occlusion import occlusion_sensitivity
from featapp.render.quiz import occlusion_reveal, reveal_words
from featapp.stats.analysis import load_cached
from featapp.stats.quiz import QuizUnavailable, channel_quiz, occlusion_question
from tests.helpers.apptest import as_shown, assert_clean, captions, go, main_text, open_app
from tests.helpers.samples import scanned_sample


@pytest.fixture(scope="module")
def sample(tmp_path_factory, dataset, model):
    """24 photos and their scan; returns (photos folder, cache folder, the scan)."""
    root, cache = scanned_sample(tmp_path_factory.mktemp("quiz-app"), dataset, model, per_class=12)
    return root, cache, load_cached(model, Dataset(root), "test", cache)


def use(monkeypatch, tmp_path, photos, cache) -> None:
    monkeypatch.setenv("FEATAPP_DATA_DIR", str(photos))
    monkeypatch.setenv("FEATAPP_CACHE_DIR", str(cache))
    monkeypatch.setenv("FEATAPP_SNAPSHOTS", str(tmp_path / "no-snapshots"))
    monkeypatch.setenv("FEATAPP_PROVIDER", "cpu")
    monkeypatch.setenv("FEATAPP_MAP_VIEW", "server")
    monkeypatch.delenv("FEATAPP_MODEL", raising=False)


@pytest.fixture
def scanned(monkeypatch, tmp_path, sample):
    photos, cache, stats = sample
    use(monkeypatch, tmp_path, photos, cache)
    return stats


def neuron_page(link: str | list[str] | None = None):
    at = open_app()
    if link is not None:
        at.query_params[QUIZ_PARAM] = link
    return go(at, "neuron")


def plain(at) -> str:
    """What the page says, without Markdown's bold marks."""
    return main_text(at).replace("**", "")


def question_photos(at) -> list[str]:
    """The file names under the question's two photos, left first."""
    found = []
    for caption in captions(at):
        match = re.match(r"The (left|right) photo(?: \(.*\))?: (.+)$", caption)
        if match:
            found.append((match.group(1), match.group(2)))
    return [name for side, name in sorted(found, key=lambda pair: pair[0] != "left")]


def names(stats, question) -> list[str]:
    return [stats.paths[question.left.index].name, stats.paths[question.right.index].name]


def test_the_links_quiz_number_gives_the_librarys_questions_and_ten_answers_a_score(scanned):
    stats = scanned
    quiz = channel_quiz(stats, "conv2d", 0, 1234, "max")
    at = neuron_page("1234")
    text = plain(at)
    assert "Quiz number 1234" in text and "Ten questions about layer 1 (conv2d), channel 1" in text
    assert at.query_params[QUIZ_PARAM] == "1234"
    for number, question in enumerate(quiz.questions):
        assert f"Question {number + 1} of 10: which photo drives layer 1, channel 1 harder?" in main_text(at)
        assert question_photos(at) == names(stats, question)
        # Right on even questions, wrong on odd ones.
        choice = question.answer if number % 2 == 0 else ("left" if question.answer == "right" else "right")
        at.button(key=f"neuron.quiz_{choice}").click().run()
        assert_clean(at)
        assert reveal_words(question, choice, 24, "max") in main_text(at)
        assert f"Score: {number // 2 + 1} of {number + 1} answered." in plain(at)
        # Both photos' maps are shown, each with its value and rank.
        map_captions = [c for c in captions(at) if c.startswith("Its map of channel 1")]
        assert map_captions == [
            f"Its map of channel 1: max {photo.value:.3g}, number {photo.rank + 1} of 24"
            for photo in (question.left, question.right)
        ]
        assert not [b for b in at.button if b.key in ("neuron.quiz_left", "neuron.quiz_right")]  # answered
        if number < 9:
            at.button(key="neuron.quiz_next").click().run()
            assert_clean(at)
    text = plain(at)
    assert "Your score: 5 of 10. Tossing a coin gets 5 of 10 on average." in text
    assert "Question by question: 1: right, 2: wrong, 3: right" in text
    at.button(key="neuron.quiz_again").click().run()
    assert_clean(at)
    assert "Question 1 of 10" in main_text(at) and question_photos(at) == names(stats, quiz.questions[0])


def test_the_same_link_gives_the_same_questions_in_another_session_and_another_number_others(scanned):
    stats = scanned
    first = neuron_page("1234")
    assert question_photos(first) == names(stats, channel_quiz(stats, "conv2d", 0, 1234).questions[0])
    first.button(key="neuron.quiz_left").click().run()
    again = neuron_page("1234")  # a classmate's browser: a new session, question 1 again
    assert question_photos(again) == names(stats, channel_quiz(stats, "conv2d", 0, 1234).questions[0])
    assert "Question 1 of 10" in main_text(again)
    other = neuron_page("98765")
    expected = [names(stats, question) for question in channel_quiz(stats, "conv2d", 0, 98765).questions]
    assert question_photos(other) == expected[0]
    assert expected != [names(stats, question) for question in channel_quiz(stats, "conv2d", 0, 1234).questions]


def test_without_a_number_in_the_link_the_page_draws_one_and_new_quiz_draws_another(scanned):
    stats = scanned
    at = neuron_page()
    seed = at.query_params[QUIZ_PARAM]
    assert re.fullmatch(r"[0-9]{4,6}", seed) and f"Quiz number {seed}" in plain(at)
    assert question_photos(at) == names(stats, channel_quiz(stats, "conv2d", 0, int(seed)).questions[0])
    at.button(key="neuron.quiz_new").click().run()
    assert_clean(at)
    new = at.query_params[QUIZ_PARAM]
    assert re.fullmatch(r"[0-9]{4,6}", new) and new != seed and f"Quiz number {new}" in plain(at)
    assert question_photos(at) == names(stats, channel_quiz(stats, "conv2d", 0, int(new)).questions[0])


@pytest.mark.parametrize(
    ("link", "says"),
    [
        ("abc", "The link's quiz number 'abc' is not a whole number from 0 to 999999999."),
        ("-5", "The link's quiz number '-5' is not a whole number"),
        ("9" * 40, "is not a whole number from 0 to 999999999"),
        ("1e3", "'1e3' is not a whole number"),
        ("", "The link's quiz number is empty."),
        (["12", "34"], "The link gives 2 quiz numbers; a quiz needs one."),
        ("**bold** $x$", "'**bold** $x$' is not a whole number"),
    ],
)
def test_a_bad_number_in_the_link_gives_a_message_and_a_new_quiz(scanned, link, says):
    at = neuron_page(link)
    warning = " ".join(as_shown(w.value) for w in at.warning)
    new = at.query_params[QUIZ_PARAM]
    assert re.fullmatch(r"[0-9]{4,6}", new)
    assert says in warning and f"Here is quiz {new} instead." in warning
    assert "Question 1 of 10" in main_text(at)
    at.run()  # the link now carries the new number: no message, the same quiz
    assert not at.warning and at.query_params[QUIZ_PARAM] == new


def test_a_channel_that_never_fires_says_why_instead_of_a_quiz(scanned):
    stats = scanned
    maxima = stats.values("conv2d_1")
    dead = int(np.flatnonzero(maxima.max(axis=0) <= 0)[0])
    with pytest.raises(QuizUnavailable) as err:
        channel_quiz(stats, "conv2d_1", dead, 1234)
    at = neuron_page("1234")
    at.selectbox(key="neuron.layer").set_value("conv2d_1").run()
    at.number_input(key="neuron.channel").set_value(dead + 1).run()
    assert_clean(at)
    assert str(err.value) in [as_shown(i.value) for i in at.info]
    assert "never fires" in str(err.value)
    assert not [b for b in at.button if b.key in ("neuron.quiz_left", "neuron.quiz_right")]


def test_without_a_scan_or_with_a_small_one_the_quiz_says_what_to_do(monkeypatch, tmp_path, dataset, model):
    photos, cache = scanned_sample(tmp_path / "six", dataset, model, per_class=3)
    use(monkeypatch, tmp_path, photos, tmp_path / "empty-cache")
    at = neuron_page("1234")
    text = main_text(at)
    assert "which has not been scanned with this model yet" in text and "scan it first" in text
    monkeypatch.setenv("FEATAPP_CACHE_DIR", str(cache))
    at = neuron_page("1234")
    assert "The quiz needs at least 20 scanned photos and this scan has 6: scan a larger split." in [
        i.value for i in at.info
    ]


def test_the_occlusion_question_marks_squares_then_reveals_the_map_and_numbers(scanned, model, dataset):
    # A photo whose p(dog) (0.89) clearly drops when one part of it is grey.
    path = next(image.path for image in dataset.images("test") if image.name == "dog.1962.jpg")
    at = neuron_page("1234")
    set_current(at.session_state, CurrentImage.from_array(prepare_image(path, model), "gallery", path.name, "dogs"))
    at.run()
    assert not [b for b in at.button if b.label.startswith("Square ")]  # nothing computed before asked
    next(b for b in at.button if b.label.startswith("Make the question for the current image")).click().run()
    assert_clean(at)
    image = get_current(at.session_state)
    question = occlusion_question(occlusion_sensitivity(model, image.array), 1234, image.key)
    assert [b.label for b in at.button if b.label.startswith("Square ")] == [f"Square {x}" for x in "ABCD"]
    assert "Which square, painted grey, lowers p(dog) most?" in plain(at)
    marked = next(i for i in at.main.image if i.proto.imgs[0].caption == "The photo with the squares to choose from")
    assert marked.proto.imgs[0].alt.count(" at input rows ") == 4
    wrong = next(c.letter for c in question.choices if c.letter != question.answer)
    at.button(key=f"neuron.quiz_square_{wrong}").click().run()
    assert_clean(at)
    text = main_text(at)
    assert occlusion_reveal(question, wrong) in text
    assert any(c.startswith("The occlusion map: drop in p(dog)") for c in captions(at))
    assert not [b for b in at.button if b.label.startswith("Square ")]
