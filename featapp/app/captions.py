"""The words the app shows about images and predictions, as plain functions: captions,
the model's answer in a sentence, and Markdown escaping for names that come from users.

>>> describe_prediction(np.array([0.25, 0.75]), ["cat", "dog"])
'The model says **dog**: p(dog) = 0.75.'
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

__all__ = [
    "markdown_literal",
    "match_classes",
    "describe_prediction",
    "gallery_caption",
    "WRONG_MARK",
    "TRAINED_ON_TEXT",
    "EXEMPLARS_FIRST",
    "photo_alt",
]

_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>$:])")


def markdown_literal(text: str) -> str:
    """``text`` escaped so that Streamlit's Markdown shows it character for character.

    File names come from students' machines: ``cat *final* $5.png`` must not turn into
    italics or a LaTeX formula (Streamlit renders ``$...$`` as maths and ``:red[...]``
    as colour), and a newline must not start a new block.

    >>> markdown_literal("cat *final* [v2] $5.png")
    'cat \\\\*final\\\\* \\\\[v2\\\\] \\\\$5\\\\.png'
    """
    return _MARKDOWN_SPECIALS.sub(r"\\\1", " ".join(text.split()))


def _singular(name: str) -> str:
    name = name.strip().lower()
    return name[:-1] if name.endswith("s") and len(name) > 1 else name


def match_classes(dataset_classes: Sequence[str], model_classes: Sequence[str]) -> dict[str, int] | None:
    """Which model class each dataset folder is, or ``None`` when they cannot be matched.

    Folders match classes by name, ignoring case and a plural "s" ("dogs" is "dog");
    when the names differ but the counts agree, folders match classes in order (the
    order the model was trained in).

    >>> match_classes(["cats", "dogs"], ["cat", "dog"])
    {'cats': 0, 'dogs': 1}
    >>> match_classes(["a", "b", "c"], ["cat", "dog"]) is None
    True
    """
    by_name = {_singular(name): index for index, name in enumerate(model_classes)}
    matched = {folder: by_name[_singular(folder)] for folder in dataset_classes if _singular(folder) in by_name}
    if len(matched) == len(dataset_classes) and len(set(matched.values())) == len(matched):
        return matched
    if len(dataset_classes) == len(model_classes):
        return {folder: index for index, folder in enumerate(dataset_classes)}
    return None


def describe_prediction(probabilities: np.ndarray, class_names: Sequence[str]) -> str:
    """The model's answer for one image, in words (Markdown).

    >>> describe_prediction(np.array([0.25, 0.75]), ["cat", "dog"])
    'The model says **dog**: p(dog) = 0.75.'
    >>> describe_prediction(np.array([0.1, 0.2, 0.7]), ["a", "b", "c"])
    'The model says **c** (p = 0.70); next: b (0.20).'
    """
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    best = int(probabilities.argmax())
    if len(probabilities) == 2:
        positive = class_names[1]
        return f"The model says **{class_names[best]}**: p({positive}) = {probabilities[1]:.2f}."
    order = np.argsort(-probabilities, kind="stable")
    text = f"The model says **{class_names[best]}** (p = {probabilities[best]:.2f})"
    if len(order) > 1:
        second = int(order[1])
        text += f"; next: {class_names[second]} ({probabilities[second]:.2f})"
    return text + "."


WRONG_MARK = ":red[**wrong**]"
"""How a gallery caption marks a wrong answer: a word, in red (no emoji font needed)."""
TRAINED_ON_TEXT = "the model trained on this photo"

EXEMPLARS_FIRST = (
    "**Photos first, then the synthetic picture.** The photos that make this channel fire most come first because "
    "they tell more about it: in a study on an ImageNet network (Borowski et al., ICLR 2021), people shown a "
    "channel's top photos predicted which of two new images drives it harder 92% of the time; shown synthetic "
    "pictures like the one beside them, 82%. The synthetic picture is the pattern the channel responds to with "
    "nothing else in the way; the photos show what that looks like in real images."
)
"""Why the One-neuron page leads with a channel's top photos (issue 29)."""


def gallery_caption(
    true_folder: str,
    probabilities: np.ndarray | None,
    class_names: Sequence[str],
    classes_of_folders: dict[str, int] | None,
    trained_on: bool = False,
) -> tuple[str, bool | None]:
    """A gallery photo's caption and whether the model got it wrong (``None``: cannot tell).

    A wrong answer is marked in words (red where colours show), not by an emoji that a
    browser without an emoji font draws as an empty box; the gallery also frames the
    photo in red. A photo the model was trained on says so.

    >>> gallery_caption("dogs", np.array([0.9, 0.1]), ["cat", "dog"], {"cats": 0, "dogs": 1})
    (':red[**wrong**] · dogs · p(dog) 0.10', True)
    >>> gallery_caption("cats", None, ["cat", "dog"], {"cats": 0, "dogs": 1}, trained_on=True)
    ('cats · the model trained on this photo', None)
    """
    seen = f" · {TRAINED_ON_TEXT}" if trained_on else ""
    if probabilities is None:
        return true_folder + seen, None
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    best = int(probabilities.argmax())
    if len(probabilities) == 2:
        score = f"p({class_names[1]}) {probabilities[1]:.2f}"
    else:
        score = f"{class_names[best]} {probabilities[best]:.2f}"
    wrong = (
        None
        if classes_of_folders is None or true_folder not in classes_of_folders
        else (classes_of_folders[true_folder] != best)
    )
    mark = f"{WRONG_MARK} · " if wrong else ""
    return f"{mark}{true_folder} · {score}{seen}", wrong


def photo_alt(
    name: str,
    probabilities: np.ndarray | None,
    class_names: Sequence[str],
    *,
    true_class: str | None = None,
    wrong: bool | None = None,
    trained_on: bool = False,
    kind: str = "Photo",
) -> str:
    """Alt text for a photo: its name, its true class where known, the model's answer and
    whether that answer is right: what the caption and the red frame say, in words a
    screen reader reads with the picture.

    >>> photo_alt("dog.1880.jpg", np.array([0.06, 0.94]), ["cat", "dog"], true_class="dogs", wrong=False)
    'Photo dog.1880.jpg, true class dogs. The model says dog, p(dog) 0.94: right.'
    >>> photo_alt("cat.7.jpg", np.array([0.2, 0.8]), ["cat", "dog"], true_class="cats", wrong=True)
    'Photo cat.7.jpg, true class cats. The model says dog, p(dog) 0.80: wrong.'
    >>> photo_alt("stripes", None, ["cat", "dog"], kind="Probe")
    'Probe stripes.'
    """
    text = f"{kind} {' '.join(name.split())}"
    if true_class is not None:
        text += f", true class {true_class}"
    text += "."
    if probabilities is not None:
        probabilities = np.asarray(probabilities, dtype=np.float64).reshape(-1)
        best = int(probabilities.argmax())
        if len(probabilities) == 2:
            score = f"p({class_names[1]}) {probabilities[1]:.2f}"
        else:
            score = f"p = {probabilities[best]:.2f}"
        text += f" The model says {class_names[best]}, {score}"
        text += {True: ": wrong.", False: ": right.", None: "."}[wrong]
    if trained_on:
        text += " The model trained on this photo."
    return text
