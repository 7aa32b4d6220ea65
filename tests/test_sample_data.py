"""The README's sample batch is the same on every machine: built with the README's own cohort
arguments, it has the recorded SHA-256 (sample_data/README.md), whatever is installed."""

import re
import shlex
from pathlib import Path

from cs3f_tools.cohort import cohort_digest, main

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_SHA256 = "e3602d22700ba77d0f92f26069c97fc761b834a2e4ebc2ad3c5a5a00b05d9bbe"


def readme_cohort_arguments() -> list[str]:
    """The arguments the README's first command gives ``cs3f_tools.cohort``."""
    command = re.search(r"-m cs3f_tools\.cohort ([^&]+)&&", (ROOT / "README.md").read_text())
    assert command, "the README's first command builds the sample with cs3f_tools.cohort"
    return shlex.split(command.group(1))


def test_readme_sample_is_identical_everywhere(tmp_path):
    arguments = readme_cohort_arguments()
    assert "--packaged-only" in arguments  # nothing a machine may or may not have installed
    out = arguments.index("--out") + 1
    arguments[out] = str(tmp_path / "sample")
    main([a for a in arguments if a != "--reuse"])
    assert cohort_digest(tmp_path / "sample") == SAMPLE_SHA256
    assert SAMPLE_SHA256 in (ROOT / "sample_data" / "README.md").read_text()
