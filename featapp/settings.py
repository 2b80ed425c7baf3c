"""Every setting featapp reads, in one place: the ``FEATAPP_*`` environment variables and
the default paths behind them. The library, the pages, the command line and the tests
all ask here, so a rule (say, where the committed model is found) exists once.

Values are read when asked for, not at import, so a test or a notebook can change the
environment and see the effect.

>>> import os
>>> os.environ["FEATAPP_MODEL"] = "/tmp/other.onnx"
>>> model_path()
PosixPath('/tmp/other.onnx')
>>> del os.environ["FEATAPP_MODEL"]
>>> model_path().name
'cats_dogs_small.onnx'
>>> [s.env for s in SETTINGS][:3]
['FEATAPP_DATA_DIR', 'FEATAPP_MODEL', 'FEATAPP_SNAPSHOTS']
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Setting",
    "SETTINGS",
    "DATA_DIR_ENV",
    "MODEL_ENV",
    "SNAPSHOTS_ENV",
    "CACHE_DIR_ENV",
    "CACHE_IMAGES_ENV",
    "CACHE_MB_ENV",
    "PROVIDER_ENV",
    "THREADS_ENV",
    "HEAVY_NICE_ENV",
    "DATA_HOME_ENV",
    "VIS_STEPS_ENV",
    "MAP_VIEW_ENV",
    "MAP_VIEWS",
    "REPO_ROOT",
    "REPO_MODELS_DIR",
    "INSTALLED_MODELS_DIR",
    "REPO_DATA_DIR",
    "configured",
    "in_checkout",
    "models_dir",
    "model_path",
    "snapshots_dir",
    "cache_dir",
    "data_home",
    "cache_images",
    "cache_mb",
    "provider",
    "threads_text",
    "heavy_nice",
    "vis_steps",
    "map_view",
]


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, what it holds when unset, and what it does."""

    env: str
    default: str
    meaning: str


DATA_DIR_ENV = "FEATAPP_DATA_DIR"
MODEL_ENV = "FEATAPP_MODEL"
SNAPSHOTS_ENV = "FEATAPP_SNAPSHOTS"
CACHE_DIR_ENV = "FEATAPP_CACHE_DIR"
CACHE_IMAGES_ENV = "FEATAPP_CACHE_IMAGES"
CACHE_MB_ENV = "FEATAPP_CACHE_MB"
PROVIDER_ENV = "FEATAPP_PROVIDER"
THREADS_ENV = "FEATAPP_THREADS"
HEAVY_NICE_ENV = "FEATAPP_HEAVY_NICE"
DATA_HOME_ENV = "FEATAPP_DATA_HOME"
VIS_STEPS_ENV = "FEATAPP_VIS_STEPS"
MAP_VIEW_ENV = "FEATAPP_MAP_VIEW"

SETTINGS = (
    Setting(DATA_DIR_ENV, "data/cats_vs_dogs, else the downloaded photos", "photos for the gallery"),
    Setting(MODEL_ENV, "models/cats_dogs_small.onnx", "another converted model"),
    Setting(SNAPSHOTS_ENV, "models/snapshots", "training snapshots for the training-progress slider"),
    Setting(CACHE_DIR_ENV, "$XDG_CACHE_HOME/featapp or ~/.cache/featapp", "dataset scans and other caches"),
    Setting(CACHE_IMAGES_ENV, "32", "images whose activations each app process keeps in memory, at most"),
    Setting(CACHE_MB_ENV, "200", "megabytes of activations each app process keeps (a bigger model keeps fewer images)"),
    Setting(PROVIDER_ENV, "auto", "cpu or cuda to force ONNX Runtime's provider"),
    Setting(THREADS_ENV, "ONNX Runtime decides", "ONNX Runtime's threads per session"),
    Setting(
        HEAVY_NICE_ENV,
        "10",
        "how much lower (nice, 0-19) heavy views run than clicks on Linux; 0 = the same priority",
    ),
    Setting(DATA_HOME_ENV, "$XDG_DATA_HOME/featapp or ~/.local/share/featapp", "where download-photos puts photos"),
    Setting(
        VIS_STEPS_ENV, "128", "gradient steps per feature-visualisation picture in the app (fewer on a slow server)"
    ),
    Setting(
        MAP_VIEW_ENV,
        "browser",
        "browser: the Feature map changes channel, colours and scaling in the browser; server: every change reruns",
    ),
)

REPO_ROOT = Path(__file__).resolve().parent.parent
REPO_MODELS_DIR = REPO_ROOT / "models"
"""``models/`` of a checkout (``git clone``): the committed model, its snapshots and lists."""
INSTALLED_MODELS_DIR = Path(__file__).resolve().parent / "models"
"""The same files inside an installed package (``pip install .``, which maps ``models/`` here)."""
REPO_DATA_DIR = REPO_ROOT / "data" / "cats_vs_dogs"
COMMITTED_MODEL = "cats_dogs_small.onnx"


def in_checkout() -> bool:
    """True when featapp runs from a clone of its repository, not from an installed package."""
    return (REPO_ROOT / "streamlit_app.py").is_file() and (REPO_ROOT / "featapp" / "settings.py").is_file()


def configured(env: str) -> str:
    """The variable's value with surrounding spaces removed; ``""`` when unset."""
    return os.environ.get(env, "").strip()


def models_dir() -> Path:
    """Where the committed model lives: the checkout's ``models/``, else the installed copy.
    From a checkout the repository's files win, so a model converted in place is used even
    when an older copy is installed."""
    if not (REPO_MODELS_DIR / COMMITTED_MODEL).is_file() and INSTALLED_MODELS_DIR.is_dir():
        return INSTALLED_MODELS_DIR
    return REPO_MODELS_DIR


def model_path() -> Path:
    """``$FEATAPP_MODEL``, else the committed model."""
    return Path(configured(MODEL_ENV) or models_dir() / COMMITTED_MODEL).expanduser()


def snapshots_dir() -> Path:
    """``$FEATAPP_SNAPSHOTS``, else the committed snapshots."""
    return Path(configured(SNAPSHOTS_ENV) or models_dir() / "snapshots").expanduser()


def cache_dir() -> Path:
    """``$FEATAPP_CACHE_DIR``, else ``$XDG_CACHE_HOME/featapp``, else ``~/.cache/featapp``."""
    if configured(CACHE_DIR_ENV):
        return Path(configured(CACHE_DIR_ENV)).expanduser()
    if configured("XDG_CACHE_HOME"):
        return Path(configured("XDG_CACHE_HOME")).expanduser() / "featapp"
    return Path.home() / ".cache" / "featapp"


def data_home() -> Path:
    """Where downloaded photos go: ``$FEATAPP_DATA_HOME``, else ``$XDG_DATA_HOME/featapp``,
    else ``~/.local/share/featapp``."""
    if configured(DATA_HOME_ENV):
        return Path(configured(DATA_HOME_ENV)).expanduser()
    if configured("XDG_DATA_HOME"):
        return Path(configured("XDG_DATA_HOME")).expanduser() / "featapp"
    return Path.home() / ".local" / "share" / "featapp"


def cache_images(default: int = 32) -> int:
    """``$FEATAPP_CACHE_IMAGES`` (at least 1), else ``default``; text that is not a whole
    number is ignored rather than stopping the app.

    >>> os.environ["FEATAPP_CACHE_IMAGES"] = "many"; cache_images()
    32
    >>> os.environ["FEATAPP_CACHE_IMAGES"] = "0"; cache_images()
    1
    >>> del os.environ["FEATAPP_CACHE_IMAGES"]
    """
    text = configured(CACHE_IMAGES_ENV)
    return max(1, int(text)) if text.isdigit() else default


def cache_mb(default: int = 200) -> int:
    """``$FEATAPP_CACHE_MB`` (at least 1), else ``default``; text that is not a whole number is ignored.

    >>> os.environ["FEATAPP_CACHE_MB"] = "lots"; cache_mb()
    200
    >>> del os.environ["FEATAPP_CACHE_MB"]
    """
    text = configured(CACHE_MB_ENV)
    return max(1, int(text)) if text.isdigit() else default


def provider(requested: str = "auto") -> str:
    """``$FEATAPP_PROVIDER`` when set (it overrides what the caller asked for), else ``requested``."""
    return configured(PROVIDER_ENV) or requested


def threads_text() -> str:
    """``$FEATAPP_THREADS`` as written (``""`` = ONNX Runtime decides); checked by the model loader."""
    return configured(THREADS_ENV)


def heavy_nice(default: int = 10) -> int:
    """``$FEATAPP_HEAVY_NICE`` (0 to 19; 0 = heavy runs at the clicks' priority), else ``default``:
    how many steps lower (``nice``) heavy runs are scheduled (:mod:`featapp.engine.priority`).

    >>> os.environ["FEATAPP_HEAVY_NICE"] = "0"; heavy_nice()
    0
    >>> os.environ["FEATAPP_HEAVY_NICE"] = "low"; heavy_nice()
    10
    >>> del os.environ["FEATAPP_HEAVY_NICE"]
    """
    text = configured(HEAVY_NICE_ENV)
    return min(19, int(text)) if text.isdigit() else default


def vis_steps(default: int) -> int:
    """``$FEATAPP_VIS_STEPS`` (a whole number above 0), else ``default``: the app's gradient
    steps per feature-visualisation picture.

    >>> os.environ["FEATAPP_VIS_STEPS"] = "8"; vis_steps(128)
    8
    >>> os.environ["FEATAPP_VIS_STEPS"] = "0"; vis_steps(128)
    128
    >>> del os.environ["FEATAPP_VIS_STEPS"]
    """
    text = configured(VIS_STEPS_ENV)
    return int(text) if text.isdigit() and int(text) > 0 else default


MAP_VIEWS = ("browser", "server")


def map_view() -> str:
    """``$FEATAPP_MAP_VIEW``: ``"browser"`` (the default; the Feature map draws in the
    browser and changing channel, colours or scaling never waits for the server) or
    ``"server"`` (every change is a rerun that draws a Vega-Lite chart: what an AppTest,
    which runs no JavaScript, can drive). Anything else is the default.

    >>> os.environ["FEATAPP_MAP_VIEW"] = "server"; map_view()
    'server'
    >>> os.environ["FEATAPP_MAP_VIEW"] = "canvas"; map_view()
    'browser'
    >>> del os.environ["FEATAPP_MAP_VIEW"]
    """
    text = configured(MAP_VIEW_ENV).lower()
    return text if text in MAP_VIEWS else "browser"
