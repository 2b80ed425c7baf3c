"""The server's CPU per click of the One-neuron page's quiz (issue 29, item 4).

    python -m bench.bench_quiz [--per-class 50] [--out bench/results/quiz.md]

Copies ``--per-class`` photos of each class of the test split into a temporary folder, scans
them with the committed model, and runs the app's script in AppTest (the server's side of
each rerun; no browser). Around each click it reads ``time.process_time()`` (this process's
CPU, every thread): the page's whole rerun, as a server would spend it. For layers 1 and 7:

* **answer**: a student's answer, which reveals both photos' maps (the model runs on the two
  photos, unless a classmate already answered this question) and the values;
* **next question**: the next pair of photos;
* **answer, a classmate**: a second session with the same quiz number answering the same
  questions, whose maps are then in the cache;
* **rerun, no quiz click**: the same page rerun with nothing clicked, the baseline the quiz
  adds to (the page's ranking, feature picture and comparison sections);

and for the occlusion question, on dog.1962.jpg (whose p(dog) drops when part of it is grey):
**square answered** (the reveal: the occlusion map drawn over the photo with the squares), one
per quiz number, the occlusion map itself already computed (the button that computes it is
timed once, apart).

It also times the library's part alone (``channel_quiz`` on the scan and the reveal's
sentence), warm.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.machine import cpu_features, cpu_name, load_average

REPO_ROOT = Path(__file__).resolve().parent.parent
LAYERS = (("conv2d", 1), ("conv2d_3", 7))
OCCLUSION_PHOTO = "dog.1962.jpg"
NOTE = """\
How to read it: every row is the page's whole rerun. The quiz's own share of a click is its row minus
"rerun, no quiz click" for the same layer: the first student to answer a question pays for the model run
on its two photos and the two map pictures; a classmate with the same quiz number finds them cached.
The machine was shared with a training run and other sessions (see the load average), so single
figures vary by tens of percent; compare rows of this one run only.
"""


def cpu_ms(action: Callable[[], object]) -> float:
    before = time.process_time()
    action()
    return (time.process_time() - before) * 1000


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def row(name: str, values: list[float], digits: int = 0) -> str:
    cells = [statistics.fmean(values), statistics.median(values), percentile(values, 0.9), max(values)]
    return f"| {name} | {len(values)} | " + " | ".join(f"{v:.{digits}f}" for v in cells) + " |"


def open_neuron(seed: int, layer: str, channel: int):
    from featapp.app.quiz import QUIZ_PARAM
    from tests.helpers.apptest import assert_clean, go, open_app

    at = open_app()
    at.query_params[QUIZ_PARAM] = str(seed)
    go(at, "neuron")
    at.selectbox(key="neuron.layer").set_value(layer).run()
    at.number_input(key="neuron.channel").set_value(channel + 1).run()
    assert_clean(at)
    return at


def click(at, key: str) -> float:
    from tests.helpers.apptest import assert_clean

    spent = cpu_ms(lambda: at.button(key=key).click().run())
    assert_clean(at)
    return spent


def answer_all(at, quiz) -> tuple[list[float], list[float]]:
    """Answer every question (the stronger photo), then go on: CPU ms of each answer and each 'next'."""
    answers, nexts = [], []
    for number, question in enumerate(quiz.questions):
        answers.append(click(at, f"neuron.quiz_{question.answer}"))
        if number + 1 < len(quiz.questions):
            nexts.append(click(at, "neuron.quiz_next"))
    return answers, nexts


def usable_channel(stats, layer: str, seed: int) -> int:
    from featapp.stats.quiz import QuizUnavailable, channel_quiz

    for channel in range(stats.units(layer)):
        try:
            channel_quiz(stats, layer, channel, seed)
            return channel
        except QuizUnavailable:
            continue
    raise RuntimeError(f"no channel of {layer} has a quiz on this scan")


def library_times(stats, layer: str, channel: int, repeats: int) -> list[float]:
    from featapp.render.quiz import reveal_words
    from featapp.stats.quiz import channel_quiz

    times = []
    for seed in range(repeats):
        start = time.perf_counter()
        quiz = channel_quiz(stats, layer, channel, seed)
        reveal_words(quiz.questions[0], "left", quiz.photos, quiz.by)
        times.append((time.perf_counter() - start) * 1000)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=3, help="quiz numbers per layer (ten answers each)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    from featapp.app.appstate import CurrentImage, set_current
    from featapp.data.dataset import Dataset
    from featapp.engine.images import prepare_image
    from featapp.engine.model import load_model
    from featapp.stats.analysis import load_cached
    from featapp.stats.quiz import channel_quiz
    from tests.helpers.samples import scanned_sample

    work = Path(tempfile.mkdtemp(prefix="featapp-quiz-bench-"))
    model = load_model(REPO_ROOT / "models" / "cats_dogs_small.onnx", provider="cpu")
    data_dir = Path(os.environ.get("FEATAPP_DATA_DIR") or REPO_ROOT.parent / "shared" / "data" / "cats_vs_dogs")
    data = Dataset(data_dir)
    started = time.perf_counter()
    photos, cache = scanned_sample(work, data, model, per_class=args.per_class)
    scan_s = time.perf_counter() - started
    stats = load_cached(model, Dataset(photos), "test", cache)
    os.environ.update(
        FEATAPP_DATA_DIR=str(photos),
        FEATAPP_CACHE_DIR=str(cache),
        FEATAPP_SNAPSHOTS=str(work / "no-snapshots"),
        FEATAPP_PROVIDER="cpu",
        FEATAPP_MAP_VIEW="server",
    )

    samples: dict[str, list[float]] = {}
    library: dict[str, list[float]] = {}
    for layer, number in LAYERS:
        channel = usable_channel(stats, layer, 1)
        library[f"layer {number} ({layer}), channel {channel + 1}"] = library_times(stats, layer, channel, 200)
        name = f"layer {number}, channel {channel + 1}"
        for key in ("answer", "next question", "answer, a classmate", "rerun, no quiz click"):
            samples.setdefault(f"{name}: {key}", [])
        for seed in range(1, args.seeds + 1):
            quiz = channel_quiz(stats, layer, channel, seed)
            first = open_neuron(seed, layer, channel)
            answers, nexts = answer_all(first, quiz)
            samples[f"{name}: answer"] += answers
            samples[f"{name}: next question"] += nexts
            classmate = open_neuron(seed, layer, channel)
            samples[f"{name}: answer, a classmate"] += answer_all(classmate, quiz)[0]
            samples[f"{name}: rerun, no quiz click"] += [cpu_ms(classmate.run) for _ in range(5)]

    # The occlusion question, on a photo that has one (p(dog) = 0.89 drops when its head is grey;
    # many photos the model is sure of give none).
    at = open_neuron(1, "conv2d", 0)
    occluded = next((image.path for image in data.images("test") if image.name == OCCLUSION_PHOTO), None)
    if occluded is not None:
        set_current(at.session_state, CurrentImage.from_array(prepare_image(occluded, model), "gallery", occluded.name))
        at.run()
    start_button = next(b for b in at.button if b.label.startswith("Make the question"))
    occlusion_ms = cpu_ms(lambda: start_button.click().run())
    squares: list[float] = []
    if any(b.label.startswith("Square ") for b in at.button):
        for _ in range(args.seeds * 3):
            squares.append(click(at, "neuron.quiz_square_A"))
            click(at, "neuron.quiz_new")  # a new quiz number: new squares on the same map
    lines = [
        "# The quiz: server CPU per click",
        "",
        f"Machine: {cpu_name()} ({cpu_features()}), {os.cpu_count()} cores, load average before the run "
        f"{load_average()}; `python -m bench.bench_quiz --per-class {args.per_class} --seeds {args.seeds}`.",
        f"Scan: {len(stats)} photos of the test split ({scan_s:.0f} s to copy and scan). The app's script in AppTest",
        "(the server's side of a rerun, no browser); CPU = `time.process_time()` of the process around each click,",
        "every thread, the page's whole rerun (the quiz and everything else on the page).",
        "",
        "| click | n | mean ms | median ms | p90 ms | max ms |",
        "|---|---|---|---|---|---|",
        *(row(name, values) for name, values in samples.items() if values),
        *([row("occlusion question: square answered (reveal)", squares)] if squares else []),
        "",
        f"Computing the occlusion map for the question (its button, once per photo): {occlusion_ms:.0f} ms of CPU."
        + ("" if squares else " The photo gave no occlusion question, so no square was timed."),
        "",
        *NOTE.splitlines(),
        "",
        "The library's part alone (`channel_quiz` on the scan and the reveal's sentence), wall ms, warm:",
        "",
        "| channel | n | mean ms | median ms | p90 ms | max ms |",
        "|---|---|---|---|---|---|",
        *(row(name, values, 2) for name, values in library.items()),
        "",
    ]
    report = "\n".join(lines)
    print(report)
    if args.out:
        from featapp.cache import atomic_write_bytes

        atomic_write_bytes(args.out, report.encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
