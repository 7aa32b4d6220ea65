"""What every benchmark records about where its figures come from."""

from __future__ import annotations

import subprocess
from pathlib import Path


def commit() -> str | None:
    """The short git commit of this checkout, or ``None`` outside a git checkout."""
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).parent,
    )
    return done.stdout.strip() or None
