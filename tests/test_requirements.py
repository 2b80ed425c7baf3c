"""The requirements files parse under PEP 508 and pick exactly one runtime per platform.

A marker with ``not`` once broke CI: pip rejects it before installing anything, and a
newer local pip had been installed from a different file, so nothing here noticed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]

PLATFORMS = {
    "linux-x86_64": {"sys_platform": "linux", "platform_machine": "x86_64"},
    "linux-aarch64": {"sys_platform": "linux", "platform_machine": "aarch64"},
    "windows-amd64": {"sys_platform": "win32", "platform_machine": "AMD64"},
    "windows-arm64": {"sys_platform": "win32", "platform_machine": "ARM64"},
    "macos-arm64": {"sys_platform": "darwin", "platform_machine": "arm64"},
    "macos-x86_64": {"sys_platform": "darwin", "platform_machine": "x86_64"},
}


def parse_requirements(name: str) -> list[Requirement]:
    requirements = []
    for raw in (ROOT / name).read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#") or line.startswith("-r"):
            continue
        requirements.append(Requirement(line))  # raises InvalidRequirement / InvalidMarker
    return requirements


def installed_names(name: str, platform: dict[str, str]) -> list[str]:
    environment = {"python_version": "3.11", "python_full_version": "3.11.7", "os_name": "posix", **platform}
    return [
        req.name.lower() for req in parse_requirements(name) if req.marker is None or req.marker.evaluate(environment)
    ]


@pytest.mark.parametrize(
    "name", ["requirements.txt", "requirements-convert.txt", "requirements-dev.txt", "requirements-cuda.txt"]
)
def test_every_line_is_a_valid_pep508_requirement(name: str) -> None:
    assert parse_requirements(name)


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_exactly_one_onnx_runtime_per_platform(platform: str) -> None:
    names = installed_names("requirements.txt", PLATFORMS[platform])
    runtimes = [n for n in names if n in {"onnxruntime", "onnxruntime-gpu"}]
    assert len(runtimes) == 1, runtimes
    expected = "onnxruntime-gpu" if platform in {"linux-x86_64", "windows-amd64"} else "onnxruntime"
    assert runtimes == [expected]


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_exactly_one_tensorflow_per_platform(platform: str) -> None:
    names = installed_names("requirements-convert.txt", PLATFORMS[platform])
    assert len([n for n in names if n in {"tensorflow", "tensorflow-cpu"}]) == 1


def test_the_app_runtime_never_installs_tensorflow() -> None:
    for platform in PLATFORMS.values():
        assert not any(n.startswith("tensorflow") for n in installed_names("requirements.txt", platform))
