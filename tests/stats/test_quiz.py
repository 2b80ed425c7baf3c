"""The quiz's questions (featapp.stats.quiz): drawn from a scan's ranking with a seed, the same
for the same seed, always a top photo against a middle one, ties skipped; the occlusion
question's squares; the seed read from a link. On made-up values and on a real scan and a
real occlusion map of the committed model."""

from __future__ import annotations

import numpy as np
import pytest

from featapp.engine.images import prepare_image
from featapp.explain.occlusion import OcclusionMap, occlusion_sensitivity, patch_starts
from featapp.stats import quiz as q
from featapp.stats.quiz import (
    MAX_SEED,
    MIN_DROP,
    QuizProgress,
    QuizUnavailable,
    channel_quiz,
    draw_channel_quiz,
    fresh_seed,
    occlusion_question,
    quiz_pools,
    read_seed,
)
from tests.helpers.samples import scanned_sample


def shuffled_values(count: int, seed: int = 0) -> np.ndarray:
    """``count`` distinct values in a random order (photo order is not rank order)."""
    return np.random.default_rng(seed).permutation(np.linspace(0.0, 5.0, count)).astype(np.float32)


def pairs(quiz) -> list[tuple[int, int]]:
    return [(question.left.index, question.right.index) for question in quiz.questions]


# -- drawing the questions ------------------------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_questions_in_the_same_order():
    values = shuffled_values(1000)
    first = draw_channel_quiz(values, 1234, layer="conv2d_3", channel=5)
    again = draw_channel_quiz(values.copy(), 1234, layer="conv2d_3", channel=5)
    assert pairs(first) == pairs(again) and len(first.questions) == 10
    # Another seed, channel or ranking gives other questions (the control: the seed matters).
    assert pairs(draw_channel_quiz(values, 1235, layer="conv2d_3", channel=5)) != pairs(first)
    assert pairs(draw_channel_quiz(values, 1234, layer="conv2d_3", channel=6)) != pairs(first)
    assert pairs(draw_channel_quiz(values, 1234, layer="conv2d_3", channel=5, by="mean")) != pairs(first)


def test_a_seed_gives_the_same_pairs_on_every_machine():
    # random.Random seeded with a string is the same on every platform and Python version:
    # these are quiz 1234's pairs (left rank, right rank) on 40 photos, written down once.
    quiz = draw_channel_quiz(np.arange(40.0), 1234, layer="conv2d", channel=0)
    assert [(x.left.rank, x.right.rank) for x in quiz.questions] == [
        (22, 1), (3, 23), (9, 15), (7, 19), (5, 24), (20, 8), (6, 16), (17, 2), (0, 21), (4, 18),
    ]  # fmt: skip


def test_each_question_is_a_top_photo_against_a_middle_one_and_says_which_is_stronger():
    values = shuffled_values(1000, seed=3)
    order = np.argsort(-values, kind="stable")
    for seed in range(20):
        quiz = draw_channel_quiz(values, seed, layer="conv2d_1", channel=2)
        assert quiz.top_ranks == range(10, 60) and quiz.middle_ranks == range(400, 600)
        for question in quiz.questions:
            assert question.stronger.rank in quiz.top_ranks and question.weaker.rank in quiz.middle_ranks
            for photo in (question.left, question.right):
                assert order[photo.rank] == photo.index and photo.value == pytest.approx(values[photo.index])
            assert question.photo(question.answer).value > question.photo(other(question.answer)).value
            assert question.is_right(question.answer) and not question.is_right(other(question.answer))
        # Ten different top photos and ten different middle ones.
        assert len({x.stronger.index for x in quiz.questions}) == 10
        assert len({x.weaker.index for x in quiz.questions}) == 10


def other(side):
    return "right" if side == "left" else "left"


def test_left_and_right_are_both_used_for_the_stronger_photo():
    values = shuffled_values(300)
    answers = [x.answer for seed in range(10) for x in draw_channel_quiz(values, seed, layer="c", channel=0).questions]
    assert 30 <= answers.count("left") <= 70  # 100 coin tosses


def test_the_top_photos_the_page_shows_are_left_out_when_the_scan_is_large_enough():
    assert quiz_pools(1000) == (range(10, 60), range(400, 600))
    assert quiz_pools(2000) == (range(10, 110), range(800, 1200))
    # 24 photos: no room to leave the shown ten out; the middle starts after the top.
    assert quiz_pools(24) == (range(0, 10), range(10, 20))
    values = shuffled_values(1000)
    shown = set(np.argsort(-values, kind="stable")[:10].tolist())
    quiz = draw_channel_quiz(values, 7, layer="c", channel=0)
    assert not shown & {photo.index for x in quiz.questions for photo in (x.left, x.right)}


def test_ties_are_skipped():
    # 400 photos: the top pool is ranks 10-29, the middle 160-239. Ranks 25-239 share one
    # value, so the top pool's last five photos tie with every middle photo: no question has them.
    by_rank = np.concatenate([np.linspace(9.0, 2.0, 25), np.ones(215), np.linspace(0.9, 0.0, 160)])
    photo_order = np.random.default_rng(2).permutation(400)  # photo i has rank photo_order[i]
    values = by_rank[photo_order]
    tied_photos = {int(i) for i in np.flatnonzero((photo_order >= 25) & (photo_order < 30))}
    for seed in range(10):
        quiz = draw_channel_quiz(values, seed, layer="conv2d", channel=0)
        assert quiz.top_ranks == range(10, 30) and quiz.middle_ranks == range(160, 240)
        assert len(quiz.questions) == 10 and quiz.ties == 5 * 80
        assert not tied_photos & {x.stronger.index for x in quiz.questions}
        assert all(x.stronger.value > x.weaker.value for x in quiz.questions)


def test_too_few_pairs_after_the_ties_gives_a_message():
    # 40 photos: the top pool is ranks 0-9, the middle 15-24. Only five top photos stand out.
    values = np.concatenate([[9.0, 8.0, 7.0, 6.0, 5.0], np.ones(20), np.linspace(0.9, 0.0, 15)])
    with pytest.raises(QuizUnavailable) as err:
        draw_channel_quiz(values, 3, layer="conv2d", channel=0)
    assert str(err.value) == (
        "Channel 1 of conv2d: only 5 of its 10 top photos (ranks 1-10) stand out clearly from its middle ones "
        "(ranks 16-25) among the 40 scanned photos, and the quiz needs 10. Choose another channel, or scan a "
        "larger split."
    )


def test_near_ties_count_as_ties():
    # Values closer than TIE_SHARE of the spread are too close to call.
    # The spread is 10 (the top photo), so a tie is anything within 0.1: the other nine top
    # photos are barely above the middle ones (0.45 to 0.5).
    values = np.concatenate([[10.0], 0.5 + np.arange(9, 0, -1) * 1e-4, np.linspace(0.5, 0.45, 30)])
    with pytest.raises(QuizUnavailable, match="only 1 of its 10 top photos"):
        draw_channel_quiz(values, 1, layer="conv2d", channel=0)


def test_a_channel_that_never_fires_or_a_small_scan_gives_a_message_not_a_quiz():
    with pytest.raises(QuizUnavailable, match="never fires") as dead:
        draw_channel_quiz(np.zeros(1000, np.float32), 1, layer="conv2d_3", channel=4)
    assert "Channel 5 of conv2d_3" in str(dead.value) and "1000 scanned photos" in str(dead.value)
    with pytest.raises(QuizUnavailable, match="at least 20 scanned photos and this scan has 19"):
        draw_channel_quiz(shuffled_values(19), 1, layer="conv2d", channel=0)
    draw_channel_quiz(shuffled_values(20), 1, layer="conv2d", channel=0)  # 20 is enough


def test_progress_answers_once_per_question_and_scores():
    quiz = draw_channel_quiz(shuffled_values(100), 5, layer="c", channel=0)
    progress = QuizProgress()
    chosen = []
    for number, question in enumerate(quiz.questions):
        assert progress.current == number and not progress.revealed
        choice = question.answer if number % 3 else other(question.answer)  # questions 1, 4, 7, 10 wrong
        progress = progress.answer(choice, 10)
        chosen.append(choice)
        assert progress.revealed and progress.current == number
        assert progress.answer(other(choice), 10) == progress  # a second click on the same question
        assert quiz.score(progress.answers) == sum(1 for i in range(number + 1) if i % 3)
        progress = progress.next()
    assert progress.finished(10) and quiz.score(progress.answers) == 6
    assert progress.answer("left", 10) == progress  # nothing after the last question
    assert QuizProgress().answer("up", 10) == QuizProgress()  # type: ignore[arg-type]  # a forged choice


# -- on a real scan ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_scan(tmp_path_factory, dataset, model):
    from featapp.data.dataset import Dataset
    from featapp.stats.analysis import load_cached

    root, cache = scanned_sample(tmp_path_factory.mktemp("quiz-scan"), dataset, model, per_class=12)
    return load_cached(model, Dataset(root), "test", cache)


def test_a_real_scan_gives_questions_whose_values_are_the_photos_maps(real_scan, model):
    stats = real_scan
    assert len(stats) == 24
    quiz = channel_quiz(stats, "conv2d_2", 3, seed=42)
    assert quiz.photos == 24 and len(quiz.questions) == 10
    question = quiz.questions[0]
    paths = [stats.paths[question.left.index], stats.paths[question.right.index]]
    maps = model.activations(paths)["conv2d_2"][:, 3]
    found = maps.reshape(2, -1).max(axis=1)
    assert found == pytest.approx([question.left.value, question.right.value], rel=1e-5)
    assert (found[0] > found[1]) == (question.answer == "left")
    by_mean = channel_quiz(stats, "conv2d_2", 3, seed=42, by="mean")
    assert by_mean.questions[0].left.value == pytest.approx(
        float(stats.values("conv2d_2", "mean")[by_mean.questions[0].left.index, 3])
    )


def test_a_real_scans_dead_channel_and_a_vector_layer_give_messages(real_scan):
    stats = real_scan
    maxima = stats.values("conv2d_1")
    dead = int(np.flatnonzero(maxima.max(axis=0) <= 0)[0])  # the committed model has channels that never fire
    with pytest.raises(QuizUnavailable, match="never fires"):
        channel_quiz(stats, "conv2d_1", dead, seed=1)
    with pytest.raises(QuizUnavailable, match="no feature maps"):
        channel_quiz(stats, "dense", 0, seed=1)


# -- the seed from a link ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "seed"),
    [([], None), (["1234"], 1234), ([" 0042 "], 42), (["0"], 0), ([str(MAX_SEED)], MAX_SEED)],
)
def test_a_seed_is_plain_digits(values, seed):
    assert read_seed(values) == q.SeedReading(seed)


@pytest.mark.parametrize(
    "value",
    [
        "abc",
        "-5",
        "1e3",
        "12.5",
        "0x10",
        "",
        " ",
        str(MAX_SEED + 1),
        "9" * 400,
        "١٢٣",  # Arabic-Indic digits: int() would take them, a link should not
        "12\n34",
        "<script>alert(1)</script>",
        "NaN",
    ],
)
def test_anything_else_is_a_problem_in_words(value):
    reading = read_seed([value])
    assert reading.seed is None and reading.problem
    assert len(reading.problem) < 160 and "\n" not in reading.problem


def test_two_seeds_in_one_link_are_a_problem():
    assert read_seed(["1", "2"]) == q.SeedReading(None, "The link gives 2 quiz numbers; a quiz needs one.")


def test_a_fresh_seed_is_short_and_new():
    seeds = {fresh_seed() for _ in range(200)}
    assert all(1000 <= seed < 1_000_000 for seed in seeds) and len(seeds) > 150
    assert all(read_seed([str(seed)]).seed == seed for seed in seeds)
    assert all(fresh_seed(avoid=seed) != seed for seed in list(seeds)[:50])


# -- which grey square lowers the answer most? ---------------------------------------------------------------------


def made_map(drop: np.ndarray, patch: int = 20, stride: int = 10, size: int = 150) -> OcclusionMap:
    starts = tuple(patch_starts(size, patch, stride))
    assert drop.shape == (len(starts), len(starts))
    return OcclusionMap(
        drop=drop,
        patch=patch,
        stride=stride,
        class_index=1,
        class_name="dog",
        base_probability=0.9,
        tops=starts,
        lefts=starts,
        input_hw=(size, size),
        occluded_probability=0.9 - drop,
    )


def apart(a, b) -> int:
    """Pixels between two boxes (0 when they touch or overlap)."""
    return max(0, a[0] - b[2], b[0] - a[2], a[1] - b[3], b[1] - a[3])


def test_the_squares_include_the_worst_one_and_are_a_stride_apart():
    rng = np.random.default_rng(0)
    for seed in range(30):
        drop = rng.uniform(-0.05, 0.3, (14, 14))
        question = occlusion_question(made_map(drop), seed, "photo")
        worst = np.unravel_index(int(np.argmax(drop)), drop.shape)
        assert (question.choice(question.answer).row, question.choice(question.answer).col) == worst
        assert [c.letter for c in question.choices] == ["A", "B", "C", "D"]
        for i, a in enumerate(question.choices):
            assert a.drop == pytest.approx(drop[a.row, a.col]) and a.probability == pytest.approx(0.9 - a.drop)
            assert a.box == (a.row * 10, a.col * 10, a.row * 10 + 20, a.col * 10 + 20)
            if a.letter != question.answer:
                assert a.drop <= drop.max() - MIN_DROP
            assert all(apart(a.box, b.box) >= 10 for b in question.choices[i + 1 :])
    answers = {occlusion_question(made_map(drop), seed, "photo").answer for seed in range(30)}
    assert len(answers) > 1  # the right letter moves


def test_the_same_seed_and_photo_give_the_same_squares():
    drop = np.random.default_rng(1).uniform(0, 0.3, (14, 14))
    first = occlusion_question(made_map(drop), 99, "photo-a")
    assert occlusion_question(made_map(drop), 99, "photo-a") == first
    others = {occlusion_question(made_map(drop), 99, f"photo-{i}").choices for i in range(10)}
    assert len(others) > 1  # each photo its own squares


def test_a_flat_occlusion_map_gives_a_message():
    with pytest.raises(QuizUnavailable, match="does not hang on any one part"):
        occlusion_question(made_map(np.full((14, 14), 0.004)), 1)
    # Every other square lowers it almost as much: no clear answer.
    nearly = np.full((14, 14), 0.2)
    nearly[3, 3] = 0.205
    with pytest.raises(QuizUnavailable, match="no clear answer"):
        occlusion_question(made_map(nearly), 1)


def photo_named(dataset, name: str):
    return next(image.path for image in dataset.images("test") if image.name == name)


def test_a_real_occlusion_map_gives_a_question_whose_answer_is_its_worst_square(model, dataset):
    # The model says dog with p = 0.89 for this photo, and greying its head lowers that most.
    pixels = prepare_image(photo_named(dataset, "dog.1962.jpg"), model)
    occlusion = occlusion_sensitivity(model, pixels)
    question = occlusion_question(occlusion, 1234, "dog")
    best = question.choice(question.answer)
    assert best.drop == pytest.approx(float(occlusion.drop.max())) and best.drop > MIN_DROP
    # Grey the answer's square and ask the model: the probability the question states.
    top, left, bottom, right = best.box
    covered = pixels.copy()
    covered[top:bottom, left:right] = occlusion.fill
    again = model.predict(covered[np.newaxis]).probabilities[0, occlusion.class_index]
    assert again == pytest.approx(best.probability, abs=1e-5)
    assert question.class_name == "dog" and question.positions == occlusion.drop.size == 196


def test_a_photo_the_model_is_sure_of_everywhere_gives_a_message(model, dataset):
    # p(dog) stays above 0.99 whichever square is grey: there is nothing to ask.
    occlusion = occlusion_sensitivity(model, prepare_image(photo_named(dataset, "dog.1525.jpg"), model))
    assert occlusion.drop.max() < MIN_DROP
    with pytest.raises(QuizUnavailable, match="does not hang on any one part"):
        occlusion_question(occlusion, 1234, "dog")
