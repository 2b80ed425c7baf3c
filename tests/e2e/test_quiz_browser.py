"""The One-neuron page's quiz in Chromium: opened from a link with a quiz number, a student
answers the first question with the keyboard only (Tab and Enter), sees both photos' maps,
the values and whether they were right, and goes on to the next question; the link keeps
its number."""

from __future__ import annotations

import pytest

from featapp.data.dataset import Dataset
from featapp.stats.analysis import load_cached
from featapp.stats.quiz import channel_quiz
from tests.e2e.steps import SLOW, no_exception, scanned_sample_app, shot, tab_to, wait_until

pytestmark = pytest.mark.e2e

HEADING = '[data-testid="stMainBlockContainer"] h1'


@pytest.fixture(scope="module")
def quiz_app(tmp_path_factory, dataset, model):
    """The app on 12 photos a class of the test split, scanned (the quiz needs 20); its URL and the scan."""
    work = tmp_path_factory.mktemp("e2e-quiz")
    with scanned_sample_app(work, dataset, model, per_class=12) as url:
        yield url, load_cached(model, Dataset(work / "photos"), "test", work / "cache")


def settle(page) -> None:
    page.locator(HEADING).first.wait_for(timeout=SLOW)
    wait_until(lambda: page.locator('[data-testid="stStatusWidget"]').count() == 0, 90, "the run to end")


def test_a_question_answered_with_the_keyboard_is_revealed(quiz_app, page):
    url, stats = quiz_app
    question = channel_quiz(stats, "conv2d", 0, 1234).questions[0]
    page.goto(f"{url}/neuron?quiz=1234")
    settle(page)
    page.get_by_text("Question 1 of 10: which photo drives layer 1, channel 1 harder?").wait_for(timeout=SLOW)
    left_name = stats.paths[question.left.index].name
    assert page.get_by_role("img", name=f"The left photo of question 1: {left_name}.").count() == 1
    assert not page.get_by_role("img", name="Channel 1's map for the left photo").count()  # nothing revealed yet

    tab_to(page, "button The left one drives it harder")
    page.keyboard.press("Enter")

    verdict = "Right." if question.answer == "left" else "Not this time."
    page.get_by_text(f"The {question.answer} photo drives this channel harder").wait_for(timeout=SLOW)
    settle(page)
    text = page.locator('[data-testid="stMainBlockContainer"]').inner_text()
    assert verdict in text and f"Score: {1 if verdict == 'Right.' else 0} of 1 answered." in text
    for photo in (question.left, question.right):
        assert f"{photo.value:.3g}" in text and f"number {photo.rank + 1} of 24" in text
    maps = page.locator('img[alt^="Channel 1\'s map for the"]')
    assert maps.count() == 2 and all(maps.nth(i).evaluate("e => e.naturalWidth") > 0 for i in range(2))
    no_exception(page)
    shot(page, "quiz-revealed")

    tab_to(page, "button Next question")
    page.keyboard.press("Enter")
    page.get_by_text("Question 2 of 10").wait_for(timeout=SLOW)
    assert "quiz=1234" in page.url
    no_exception(page)
