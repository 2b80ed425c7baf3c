"""The One-neuron page's quiz in Chromium: opened from a link with a quiz number, a student
answers the first question with the keyboard only (Tab and Enter), sees both photos' maps,
the values and whether they were right, and goes on to the next question; the link keeps
its number."""

from __future__ import annotations

import re

import pytest

from featapp.data.dataset import Dataset
from featapp.stats.analysis import load_cached
from featapp.stats.quiz import channel_quiz
from tests.e2e import axe_check
from tests.e2e.steps import SLOW, no_exception, open_page, scanned_sample_app, shot, tab_to, wait_until

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

    # "New quiz" puts a new number in the address, for the instructor to share, and starts again.
    settle(page)  # a key pressed while the page is redrawn may reach a button that is being replaced
    tab_to(page, "button New quiz")
    page.keyboard.press("Enter")
    # page.url changes only while Playwright runs (not in wait_until's sleep): wait_for_url.
    page.wait_for_url(re.compile(r"quiz=(?!1234$)[0-9]+$"), timeout=30_000)
    number = page.url.rsplit("quiz=", 1)[1]
    page.get_by_text(f"Quiz number {number}").wait_for(timeout=SLOW)
    page.get_by_text("Question 1 of 10").wait_for(timeout=SLOW)


def test_the_quiz_and_the_occlusion_question_on_an_upload_have_no_serious_accessibility_faults(quiz_app, page, dataset):
    axe_check.axe_or_skip()
    url, _ = quiz_app
    # A photo of the course as a student's upload: p(dog) = 0.89, and greying its head lowers it most.
    photo = next(image.path for image in dataset.images("test") if image.name == "dog.1962.jpg")
    page.goto(url)
    settle(page)
    page.get_by_role("tab", name="Your photo or the camera").click()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        {"name": "my dog.jpg", "mimeType": "image/jpeg", "buffer": photo.read_bytes()}
    )
    page.get_by_text("Current image: my dog.jpg (your upload)").wait_for(timeout=SLOW)
    open_page(page, "One neuron, many images")
    settle(page)
    page.get_by_text("Question 1 of 10").wait_for(timeout=SLOW)
    page.wait_for_url(re.compile(r"/neuron\?quiz=[0-9]{4,6}$"), timeout=30_000)  # the page drew a number
    assert_no_blocking(page, "a quiz question")
    tab_to(page, "button The right one drives it harder")
    page.keyboard.press("Enter")
    page.get_by_text("drives this channel harder:").wait_for(timeout=SLOW)
    settle(page)
    assert_no_blocking(page, "a question revealed")

    tab_to(page, "button Make the question for the current image")
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Square A").wait_for(timeout=SLOW)
    settle(page)
    assert page.get_by_role("img", name=re.compile(r"^The photo with 4 yellow squares")).count() == 1
    assert_no_blocking(page, "the occlusion question")
    tab_to(page, "button Square A")
    page.keyboard.press("Enter")
    page.get_by_text("squares the occlusion map tried").wait_for(timeout=SLOW)
    settle(page)
    assert page.get_by_text("(your answer)").count() == 1
    assert_no_blocking(page, "the occlusion question revealed")
    shot(page, "quiz-occlusion-revealed")


def assert_no_blocking(page, where: str) -> None:
    no_exception(page)
    found = axe_check.blocking(axe_check.violations(page))
    assert not found, f"{where}:\n{axe_check.report(found)}"
