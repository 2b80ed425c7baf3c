"""Predict, then reveal: a class quiz drawn from a scan, the same for everyone with the same seed.

**Which photo drives this channel harder?** (:func:`draw_channel_quiz`). Borowski et al. (ICLR
2021) asked people to predict which of two photos makes a unit fire more, after seeing the
unit's strongest photos; people got it right far more often than chance. Here each question
pairs one of the channel's **top** photos with one from its **middle** ranks, both from a
scanned split (:class:`featapp.stats.analysis.NeuronStats`), for one channel: the page
shows that channel's strongest photos and its feature picture as the evidence to predict
from. When the scan is large enough, the quiz's top photos come from just below the ones
the page shows (``shown``), so no answer is on the screen already.

Pairs whose two values are too close to call (:data:`TIE_SHARE` of the channel's spread over
the scan) are skipped: a channel that never fires gives the same value for every photo and
no quiz at all (:class:`QuizUnavailable` says why).

**Which grey square lowers the model's answer most?** (:func:`occlusion_question`). From an
occlusion map (:mod:`featapp.explain.occlusion`): the square whose occlusion lowers the
predicted class's probability most, and a few others, each marked with a letter.

**The seed.** A whole number from 0 to :data:`MAX_SEED` (the ``quiz`` value in the page's
URL, read by :func:`read_seed`). The same seed, layer, channel, ranking and scan give the
same ten pairs in the same left/right order on every machine (``random.Random`` seeded with a
string, whose algorithm Python keeps stable, as :meth:`featapp.data.dataset.Dataset.sample` does).

>>> values = np.arange(40, dtype=np.float32)        # photo i has value i: photo 39 is the strongest
>>> quiz = draw_channel_quiz(values, seed=7, layer="conv2d", channel=0)
>>> len(quiz.questions), quiz.top_ranks, quiz.middle_ranks
(10, range(0, 10), range(15, 25))
>>> all(q.stronger.rank < q.weaker.rank for q in quiz.questions)
True
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from featapp.errors import FeatappError
from featapp.explain.occlusion import OcclusionMap

__all__ = [
    "QUESTIONS",
    "MIN_PHOTOS",
    "SHOWN_TOP",
    "TIE_SHARE",
    "MAX_SEED",
    "MIN_DROP",
    "LETTERS",
    "Side",
    "QuizUnavailable",
    "QuizPhoto",
    "QuizQuestion",
    "ChannelQuiz",
    "QuizProgress",
    "SeedReading",
    "read_seed",
    "fresh_seed",
    "quiz_pools",
    "draw_channel_quiz",
    "channel_quiz",
    "PatchChoice",
    "OcclusionQuestion",
    "occlusion_question",
]

QUESTIONS = 10
"""Questions in one quiz."""
MIN_PHOTOS = 2 * QUESTIONS
"""A scan with fewer photos has no room for ten top photos and ten others."""
SHOWN_TOP = 10
"""How many top photos the One-neuron page shows as the channel's evidence (left out of the quiz when it can)."""
TIE_SHARE = 0.01
"""Two values closer than this share of the channel's spread over the scan (max - min) are a tie: no question."""
MAX_SEED = 999_999_999
"""The largest seed a link may carry (nine digits)."""
MIN_DROP = 0.01
"""An occlusion question needs a square that lowers the probability by at least this much, and
every other marked square lowers it by at least this much less than that one."""
LETTERS = "ABCD"
"""The occlusion question's square names, one per choice (at most four)."""

Side = Literal["left", "right"]


class QuizUnavailable(FeatappError, ValueError):
    """No quiz can be built from these numbers; the message says why and what to do."""


# -- the seed --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedReading:
    """What a link's ``quiz`` values give: a ``seed``, or ``None`` with the ``problem`` in words
    (``None`` too when the link has no seed)."""

    seed: int | None
    problem: str | None = None


def _shown(value: str, limit: int = 24) -> str:
    """A value from a link, short and printable, for a sentence (the page escapes Markdown)."""
    text = "".join(ch if ch.isprintable() else "?" for ch in value)
    return text if len(text) <= limit else text[:limit] + "..."


def read_seed(values: Sequence[str]) -> SeedReading:
    """The quiz seed from a URL's ``quiz`` values (``st.query_params.get_all("quiz")``).

    Only plain digits (ASCII, up to nine) are a seed; anything else is a problem the page
    reports before drawing a new seed, never an exception.

    >>> read_seed(["1234"]), read_seed([])
    (SeedReading(seed=1234, problem=None), SeedReading(seed=None, problem=None))
    >>> read_seed(["-5"]).problem
    "The link's quiz number '-5' is not a whole number from 0 to 999999999."
    >>> read_seed(["1", "2"]).problem
    'The link gives 2 quiz numbers; a quiz needs one.'
    """
    if not values:
        return SeedReading(None)
    if len(values) > 1:
        return SeedReading(None, f"The link gives {len(values)} quiz numbers; a quiz needs one.")
    text = str(values[0]).strip()
    if re.fullmatch(r"[0-9]{1,9}", text):
        return SeedReading(int(text))
    if not text:
        return SeedReading(None, "The link's quiz number is empty.")
    return SeedReading(None, f"The link's quiz number '{_shown(text)}' is not a whole number from 0 to {MAX_SEED}.")


def fresh_seed(avoid: int | None = None) -> int:
    """A new seed of four to six digits (short enough to read out in class), not ``avoid``."""
    chooser = random.SystemRandom()
    while True:
        seed = chooser.randrange(1000, 1_000_000)
        if seed != avoid:
            return seed


# -- which photo drives this channel harder? -------------------------------------------------------------


@dataclass(frozen=True)
class QuizPhoto:
    """One photo of a question: its ``index`` in the scan (``NeuronStats.paths``), its ``rank``
    for the channel (0 is the strongest) and its ``value`` (the map's max or mean)."""

    index: int
    rank: int
    value: float


@dataclass(frozen=True)
class QuizQuestion:
    """Two photos side by side; the one with the larger value drives the channel harder."""

    left: QuizPhoto
    right: QuizPhoto

    @property
    def answer(self) -> Side:
        """The side of the photo that drives the channel harder."""
        return "left" if self.left.value > self.right.value else "right"

    @property
    def stronger(self) -> QuizPhoto:
        return self.left if self.answer == "left" else self.right

    @property
    def weaker(self) -> QuizPhoto:
        return self.right if self.answer == "left" else self.left

    def photo(self, side: Side) -> QuizPhoto:
        return self.left if side == "left" else self.right

    def is_right(self, choice: Side) -> bool:
        return choice == self.answer


@dataclass(frozen=True)
class ChannelQuiz:
    """Ten questions about ``channel`` of ``layer`` (0-based), ranked ``by`` max or mean, from
    ``photos`` scanned photos with ``seed``. ``top_ranks`` and ``middle_ranks`` are the rank
    ranges the photos were drawn from; ``ties`` counts the pairs of a top and a middle photo too close
    to call (never asked)."""

    seed: int
    layer: str
    channel: int
    by: str
    photos: int
    questions: tuple[QuizQuestion, ...]
    top_ranks: range
    middle_ranks: range
    ties: int

    def score(self, answers: Sequence[Side]) -> int:
        """How many of ``answers`` (one per question, in order, possibly fewer) are right."""
        return sum(question.is_right(choice) for question, choice in zip(self.questions, answers, strict=False))


def quiz_pools(photos: int, count: int = QUESTIONS, shown: int = SHOWN_TOP) -> tuple[range, range]:
    """The ranks the top and the middle photos are drawn from, for a scan of ``photos``.

    Top: ``max(count, photos // 20)`` ranks (the top 5%, at least ``count``), starting after
    the ``shown`` photos when they take no more than a quarter of the scan. Middle: the
    ``max(count, photos // 5)`` ranks around the median, after the top pool.

    >>> quiz_pools(1000)
    (range(10, 60), range(400, 600))
    >>> quiz_pools(20)
    (range(0, 10), range(10, 20))
    """
    top_size = max(count, photos // 20)
    skip = shown if shown + top_size <= photos // 4 else 0
    top = range(skip, min(photos, skip + top_size))
    width = max(count, photos // 5)
    start = max(top.stop, photos // 2 - width // 2)
    return top, range(start, min(photos, start + width))


def draw_channel_quiz(
    values: np.ndarray,
    seed: int,
    *,
    layer: str,
    channel: int,
    by: str = "max",
    count: int = QUESTIONS,
    shown: int = SHOWN_TOP,
) -> ChannelQuiz:
    """``count`` questions from one channel's ``values`` over a scan (one number per photo).

    Each question pairs a photo drawn from the top ranks with one from the middle ranks
    (:func:`quiz_pools`), in a random left/right order; the top photos are all different, and
    so are the middle ones while the pool allows. A pair closer than :data:`TIE_SHARE` of the
    values' spread is skipped. Raises :class:`QuizUnavailable` when there are fewer than
    :data:`MIN_PHOTOS` photos or fewer than ``count`` pairs that are not ties.

    >>> draw_channel_quiz(np.zeros(30), 1, layer="conv2d", channel=4)
    Traceback (most recent call last):
    ...
    featapp.stats.quiz.QuizUnavailable: Channel 5 of conv2d gives the same value (0) on all 30 scanned photos (it never fires on them), so no photo drives it harder than another: choose another channel.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    photos = len(values)
    name = f"Channel {channel + 1} of {layer}"
    if photos < max(MIN_PHOTOS, 2 * count):
        raise QuizUnavailable(
            f"The quiz needs at least {max(MIN_PHOTOS, 2 * count)} scanned photos and this scan has {photos}: "
            "scan a larger split."
        )
    spread = float(values.max() - values.min())
    if spread == 0:
        never = " (it never fires on them)" if values.max() <= 0 else ""
        raise QuizUnavailable(
            f"{name} gives the same value ({values[0]:.3g}) on all {photos} scanned photos{never}, so no photo "
            "drives it harder than another: choose another channel."
        )
    order = np.argsort(-values, kind="stable")  # ties go to the earlier photo, as in NeuronStats.top_k
    top_ranks, middle_ranks = quiz_pools(photos, count, shown)
    rng = random.Random(f"featapp-quiz:{seed}:{layer}:{channel}:{by}")
    tops = list(top_ranks)
    middles = list(middle_ranks)
    rng.shuffle(tops)
    rng.shuffle(middles)
    # tied[i, j]: top photo tops[i] and middle photo middles[j] are too close to call.
    tied = values[order[tops]][:, np.newaxis] - values[order[middles]][np.newaxis, :] <= TIE_SHARE * spread
    pairs: list[tuple[int, int]] = []
    paired = np.zeros(len(tops), bool)
    used = np.zeros(len(middles), bool)
    # First every top photo with a middle photo of its own, then (a small scan, or many ties)
    # middle photos again, never the same pair twice (each top photo is in one pair).
    for allow_reuse in (False, True):
        for i in range(len(tops)):
            if len(pairs) == count:
                break
            if paired[i]:
                continue
            free = np.flatnonzero(~tied[i] & (True if allow_reuse else ~used))
            if len(free):
                pairs.append((tops[i], middles[int(free[0])]))
                paired[i], used[free[0]] = True, True
    ties = int(tied.sum())
    if len(pairs) < count:
        raise QuizUnavailable(
            f"{name}: only {len(pairs)} of its {len(tops)} top photos (ranks {top_ranks.start + 1}-{top_ranks.stop}) "
            f"stand out clearly from its middle ones (ranks {middle_ranks.start + 1}-{middle_ranks.stop}) among the "
            f"{photos:,} scanned photos, and the quiz needs {count}. Choose another channel, or scan a larger split."
        )
    questions = []
    for top, middle in pairs:
        strong = QuizPhoto(int(order[top]), top, float(values[order[top]]))
        weak = QuizPhoto(int(order[middle]), middle, float(values[order[middle]]))
        left, right = (strong, weak) if rng.random() < 0.5 else (weak, strong)
        questions.append(QuizQuestion(left, right))
    return ChannelQuiz(
        seed=seed,
        layer=layer,
        channel=channel,
        by=by,
        photos=photos,
        questions=tuple(questions),
        top_ranks=top_ranks,
        middle_ranks=middle_ranks,
        ties=ties,
    )


def channel_quiz(stats, layer: str, channel: int, seed: int, by: str = "max") -> ChannelQuiz:
    """:func:`draw_channel_quiz` on a scan (:class:`featapp.stats.analysis.NeuronStats`) of a
    feature-map layer; raises :class:`QuizUnavailable` for a layer without maps.

    >>> quiz = channel_quiz(stats, "conv2d_3", 5, seed=1234)         # doctest: +SKIP
    >>> stats.paths[quiz.questions[0].left.index].name                # doctest: +SKIP
    'dog.1043.jpg'
    """
    if not stats.is_spatial(layer):
        raise QuizUnavailable(
            f"{layer} has no feature maps; the quiz asks about a channel of a convolution or pooling."
        )
    return draw_channel_quiz(stats.values(layer, by)[:, channel], seed, layer=layer, channel=channel, by=by)


@dataclass(frozen=True)
class QuizProgress:
    """Where a student is in a quiz: their ``answers`` so far, and whether the last one's
    reveal is on the screen (``revealed``) until they ask for the next question.

    >>> p = QuizProgress().answer("left", 10)
    >>> p.current, p.revealed, p.next().current
    (0, True, 1)
    """

    answers: tuple[Side, ...] = ()
    revealed: bool = False

    @property
    def current(self) -> int:
        """The index of the question on the screen (its reveal, once answered)."""
        return len(self.answers) - 1 if self.revealed else len(self.answers)

    def finished(self, count: int) -> bool:
        return len(self.answers) >= count

    def answer(self, choice: Side, count: int) -> QuizProgress:
        """This answer to the question on the screen; a second answer to it (a double
        click) or an answer after the last question changes nothing."""
        if self.revealed or self.finished(count) or choice not in ("left", "right"):
            return self
        return QuizProgress((*self.answers, choice), revealed=True)

    def next(self) -> QuizProgress:
        return replace(self, revealed=False)


# -- which grey square lowers the model's answer most? --------------------------------------------------------


@dataclass(frozen=True)
class PatchChoice:
    """One marked square: its ``letter``, its place in the occlusion grid (``row``, ``col``),
    its ``box`` on the photo (top, left, bottom, right; exclusive ends), how much greying it
    lowers the class's probability (``drop``) and that probability (``probability``)."""

    letter: str
    row: int
    col: int
    box: tuple[int, int, int, int]
    drop: float
    probability: float


@dataclass(frozen=True)
class OcclusionQuestion:
    """Squares marked A, B, C, ...: which one, greyed, lowers p(``class_name``) most? ``answer``
    is its letter; it is the largest drop of all ``positions`` squares the map tried."""

    choices: tuple[PatchChoice, ...]
    answer: str
    class_name: str
    base_probability: float
    patch: int
    positions: int

    def choice(self, letter: str) -> PatchChoice:
        return next(c for c in self.choices if c.letter == letter)

    def is_right(self, letter: str) -> bool:
        return letter == self.answer


def _near(a: tuple[int, int, int, int], b: tuple[int, int, int, int], margin: int) -> bool:
    """Whether two boxes overlap or are less than ``margin`` pixels apart."""
    return a[0] < b[2] + margin and b[0] < a[2] + margin and a[1] < b[3] + margin and b[1] < a[3] + margin


def occlusion_question(occlusion: OcclusionMap, seed: int, image_id: str = "", count: int = 4) -> OcclusionQuestion:
    """Up to ``count`` squares of an occlusion map: the one whose grey lowers the predicted
    class's probability most, the strongest square apart from it, and others drawn with
    ``seed`` (and ``image_id``, so each photo gets its own); any two are at least one stride
    apart, and each of the others lowers it by at least :data:`MIN_DROP` less. Letters are shuffled.

    Raises :class:`QuizUnavailable` when no square lowers the probability by :data:`MIN_DROP`
    (the model's answer does not depend on any one part of the photo) or when no other square
    fits beside the answer.
    """
    if not 2 <= count <= len(LETTERS):
        raise ValueError(f"count must be from 2 to {len(LETTERS)}, not {count!r}")
    drop = np.asarray(occlusion.drop, dtype=np.float64)
    probability = (
        np.asarray(occlusion.occluded_probability, dtype=np.float64)
        if occlusion.occluded_probability is not None
        else occlusion.base_probability - drop
    )
    name = occlusion.class_name
    best_row, best_col = (int(v) for v in np.unravel_index(int(np.argmax(drop)), drop.shape))
    best = float(drop[best_row, best_col])
    if best < MIN_DROP:
        raise QuizUnavailable(
            f"No grey square lowers p({name}) by {MIN_DROP} or more for this photo (the most is {best:.3f}): the "
            "model's answer does not hang on any one part of it. Choose another photo for this question."
        )
    size = occlusion.patch
    # Squares at least one step apart: neighbours of the answer lower p almost as much (the
    # map is smooth), and touching squares are hard to tell apart on the photo.
    gap = occlusion.stride

    def box(row: int, col: int) -> tuple[int, int, int, int]:
        top, left = occlusion.tops[row], occlusion.lefts[col]
        return (top, left, top + size, left + size)

    def made(row: int, col: int) -> PatchChoice:
        return PatchChoice("", row, col, box(row, col), float(drop[row, col]), float(probability[row, col]))

    chosen = [made(best_row, best_col)]
    candidates = [
        (row, col)
        for row in range(drop.shape[0])
        for col in range(drop.shape[1])
        if drop[row, col] <= best - MIN_DROP and not _near(box(row, col), chosen[0].box, gap)
    ]
    rng = random.Random(f"featapp-occlusion:{seed}:{image_id}")
    # The strongest square apart from the answer makes the question a real choice; the rest
    # are drawn at random so that they differ from photo to photo.
    candidates.sort(key=lambda rc: (-drop[rc], rc))
    rest = candidates[1:]
    ordered = candidates[:1] + rng.sample(rest, len(rest))
    for row, col in ordered:
        if len(chosen) == count:
            break
        if not any(_near(box(row, col), c.box, gap) for c in chosen):
            chosen.append(made(row, col))
    if len(chosen) < 2:
        raise QuizUnavailable(
            f"Every square of this photo away from the one that lowers p({name}) most lowers it almost as much, so "
            "there is no clear answer. Choose another photo for this question."
        )
    rng.shuffle(chosen)
    lettered = tuple(replace(c, letter=LETTERS[i]) for i, c in enumerate(chosen))
    answer = next(c.letter for c in lettered if (c.row, c.col) == (best_row, best_col))
    return OcclusionQuestion(
        choices=lettered,
        answer=answer,
        class_name=name,
        base_probability=float(occlusion.base_probability),
        patch=size,
        positions=int(drop.size),
    )
