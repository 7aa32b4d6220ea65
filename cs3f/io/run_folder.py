"""The output folder of a run and the run's work folder inside it.

A run writes only the documented outputs (:data:`OUTPUTS`, which also names the evaluator's
metrics of an earlier run) into its output folder, refuses a
folder that already holds results unless told to replace them, and keeps its scratch data
(memmaps of patient images, tokens, maps) in ``OUT/.work-<random>/``, which it removes on every
exit path it controls. For the paths it does not control (SIGTERM, on which Holoscan's own
handler forces the process out after 3 s; SIGKILL; a crash in native code) a watcher process
removes the folder the moment the run's process ends (:func:`watch_work`). Only where the
watcher dies too (power loss, a container torn down whole) does a folder survive; the next run
into the same folder removes the work folders whose process is gone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "OUTPUTS",
    "OutputFolderError",
    "make_work",
    "prepare_output",
    "remove_dead_work",
    "watch_work",
    "work_folder",
]

EVALUATION = ("metrics.json", "metrics.md", "metrics_roc.png", "metrics_pr.png")
"""What ``cs3f_tools.evaluate`` writes into a run folder by default: about that run's results,
so a run that replaces them replaces these too."""
OUTPUTS = (
    "scores.csv",
    "scores.json",
    "pacs.json",
    "report.html",
    "run.log",
    "seg",
    "sr",
    "maps",
    "preprocessed",
    *EVALUATION,
)
WORK_PREFIX = ".work-"
OWNER = "pid"  # the file in a work folder that names the process owning it
# blocks on a pipe whose only writer is the run's process: end of file = the run has ended
_WATCHER = "import os, shutil, sys; os.read(int(sys.argv[1]), 1); shutil.rmtree(sys.argv[2], True)"


class OutputFolderError(ValueError):
    """The output folder cannot be used as asked (the message says why and what to do)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_dead_work(output: Path) -> list[Path]:
    """Remove the work folders under ``output`` whose owning process is gone (or that name no
    owner); returns the ones removed. A live run's work folder is left alone."""
    removed = []
    for folder in sorted(Path(output).glob(f"{WORK_PREFIX}*")):
        try:
            owner = int((folder / OWNER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            owner = None
        if owner is None or not _alive(owner):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def prepare_output(output: Path, overwrite: bool) -> None:
    """Create ``output``, or check that it may be written: empty (leftovers of dead runs
    aside), or holding only an earlier run's outputs and ``overwrite`` given, in which case
    those are removed first (moved aside in one rename each, then deleted), so that no stale
    SEG or map of a study no longer in the input survives next to fresh scores.

    Raises:
        OutputFolderError: ``output`` is not a folder, holds results and ``overwrite`` is off,
            or holds files this program did not write (never deleted, even with ``overwrite``).
    """
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise OutputFolderError(f"the output {output} is a file, not a folder")
    output.mkdir(parents=True, exist_ok=True)
    remove_dead_work(output)
    present = sorted(p.name for p in output.iterdir() if not p.name.startswith(WORK_PREFIX))
    if not present:
        return
    foreign = [name for name in present if name not in OUTPUTS]
    if foreign:
        raise OutputFolderError(
            f"the output folder holds {len(foreign)} entries this program did not write "
            f"(e.g. {foreign[0]!r}); give an empty or new folder"
        )
    if not overwrite:
        raise OutputFolderError(
            "the output folder holds the results of an earlier run; give --overwrite to "
            "replace them, or a new folder"
        )
    trash = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}old-", dir=output))
    for name in present:
        (output / name).rename(trash / name)
    shutil.rmtree(trash)


def make_work(output: Path) -> Path:
    """A new work folder under ``output``, owned by this process (see :func:`remove_dead_work`)."""
    work = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir=output))
    (work / OWNER).write_text(str(os.getpid()), encoding="utf-8")
    return work


def watch_work(work: Path) -> int:
    """Start a process that removes ``work`` as soon as this process ends, however it ends.

    It waits on a pipe whose write end only this process holds (not inherited by children), so
    the kernel wakes it at this process's exit, crash and SIGKILL included. It runs in its own
    session, so a Ctrl-C or a signal to the run's process group does not stop it. Returns the
    pipe's write end; closing it (or exiting) lets the watcher remove the folder.
    """
    read, write = os.pipe()
    subprocess.Popen(
        [sys.executable, "-c", _WATCHER, str(read), str(work)],
        pass_fds=(read,),
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(read)
    return write


@contextmanager
def work_folder(parent: Path) -> Iterator[Path]:
    """A new work folder under ``parent`` (:func:`make_work`) for the block, removed when it
    ends, however it ends (:func:`watch_work` for the ends no ``finally`` sees)."""
    work = make_work(parent)
    watcher = watch_work(work)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)  # patient images never outlive the run
        os.close(watcher)
