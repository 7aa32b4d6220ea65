"""The output folder: refused when it holds results, replaced only when asked, and cleaned of
the work data of a killed run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.__main__ import main
from cs3f.io.run_folder import OutputFolderError, make_work, prepare_output, remove_dead_work


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _earlier_run(out):
    (out / "seg").mkdir(parents=True)
    (out / "seg" / "1.2.3.dcm").write_bytes(b"stale")
    (out / "scores.csv").write_text("rank\n")


def test_results_are_kept_unless_overwrite_is_given(tmp_path):
    out = tmp_path / "out"
    _earlier_run(out)
    with pytest.raises(OutputFolderError, match="--overwrite"):
        prepare_output(out, overwrite=False)
    assert (out / "seg" / "1.2.3.dcm").read_bytes() == b"stale"
    prepare_output(out, overwrite=True)
    assert list(out.iterdir()) == []  # no stale SEG of a study no longer in the input


def test_the_metrics_of_an_earlier_run_go_with_its_results(tmp_path):
    """README: run the demo, evaluate it (metrics into the run folder), run it again."""
    out = tmp_path / "out"
    _earlier_run(out)
    for name in ("metrics.json", "metrics.md", "metrics_roc.png", "metrics_pr.png"):
        (out / name).write_text("stale")
    prepare_output(out, overwrite=True)
    assert list(out.iterdir()) == []


def test_files_it_did_not_write_are_never_deleted(tmp_path):
    out = tmp_path / "out"
    _earlier_run(out)
    (out / "thesis.docx").write_bytes(b"mine")
    with pytest.raises(OutputFolderError, match="did not write"):
        prepare_output(out, overwrite=True)
    assert (out / "thesis.docx").read_bytes() == b"mine" and (out / "scores.csv").exists()
    with pytest.raises(OutputFolderError, match="not a folder"):
        prepare_output(out / "thesis.docx", overwrite=True)


def test_a_killed_runs_work_is_removed_and_a_live_ones_kept(tmp_path):
    dead = tmp_path / ".work-dead"
    dead.mkdir()
    (dead / "pid").write_text(str(_dead_pid()))
    (dead / "patient_source.npy").write_bytes(b"\0" * 1024)
    unowned = tmp_path / ".work-unowned"
    unowned.mkdir()
    live = make_work(tmp_path)
    assert (live / "pid").read_text() == str(os.getpid())
    assert remove_dead_work(tmp_path) == [dead, unowned]
    assert live.is_dir() and not dead.exists() and not unowned.exists()


def test_the_next_run_cleans_up_after_a_sigkill(tmp_path):
    """A run killed outright leaves its work folder; the next run into the folder removes it
    and then writes only the documented outputs."""
    out, source = tmp_path / "out", tmp_path / "in"
    out.mkdir()
    source.mkdir()
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    work = out / ".work-killed"
    work.mkdir()
    (work / "pid").write_text(str(child.pid))
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    code = main(["-i", str(source), "-o", str(out), "--encoder", "pixels"])
    assert code == 1  # an empty input: nothing to score
    assert sorted(p.name for p in out.iterdir()) == [
        "report.html",
        "run.log",
        "scores.csv",
        "scores.json",
    ]
    assert main(["-i", str(source), "-o", str(out), "--encoder", "pixels"]) == 2
    assert main(["-i", str(source), "-o", str(out), "--encoder", "pixels", "--overwrite"]) == 1


def test_a_terminated_run_leaves_no_patient_images(tmp_path):
    """SIGTERM (a scheduler, ``docker stop``) mid-run: Holoscan's handler forces the process out
    after 3 s, past any ``finally``; the watcher removes the work folder anyway."""
    from cs3f_tools.cohort import make_cohort

    make_cohort(tmp_path / "cohort", n_normal=2, n_abnormal=0, seed=5)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "app", "-i", str(tmp_path / "cohort" / "studies")]
    command += ["-o", str(out), "--encoder", "pixels", "--set", "preprocess.size=112"]
    child = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[1])
    deadline = time.monotonic() + 300
    while not list(out.glob(".work-*/studies/*/*.npy")):  # patient arrays on disk
        assert child.poll() is None and time.monotonic() < deadline, "no work files appeared"
        time.sleep(0.2)
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=60) != 0
    deadline = time.monotonic() + 10
    while list(out.glob(".work-*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not list(out.glob(".work-*"))


def test_the_watcher_removes_the_work_of_a_killed_process(tmp_path):
    """SIGKILL: no code of the run runs at all, the watcher still removes its work folder."""
    script = (
        "import sys, time; from pathlib import Path; from cs3f.io.run_folder import make_work, "
        "watch_work; work = make_work(Path(sys.argv[1])); watch_work(work); "
        "(work / 'image.npy').write_bytes(b'x'); print(work, flush=True); time.sleep(60)"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        text=True,
    )
    work = Path(child.stdout.readline().strip())
    assert (work / "image.npy").is_file()
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    deadline = time.monotonic() + 10
    while work.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not work.exists()
