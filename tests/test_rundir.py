"""The run dir claim, function by function (test_harden.py covers it through the CLI): what the claim
file holds, which files make a dir taken and the exact line a refused stage prints, the hand-over from
the entry point to its stage, and what giving an unused dir back removes and keeps."""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import stat
from pathlib import Path

import pytest

from cxrcam import rundir
from cxrcam.errors import CxrcamError
from cxrcam.rundir import (ARTIFACTS, CLAIM, HYDRA_ARTIFACTS, HYDRA_LOGS, OUTPUTS, claim_before_hydra,
                           claim_run_dir, release_if_unused, try_claim)

STARTED = "2026-01-02 03:04:05"


@pytest.fixture
def fixed_clock(monkeypatch):
    """time.strftime answers STARTED, and records the format it was asked for."""
    formats = []
    monkeypatch.setattr(rundir.time, "strftime", lambda fmt: formats.append(fmt) or STARTED)
    return formats


def claim_of(run_dir: Path) -> dict:
    return json.loads((run_dir / CLAIM).read_text())


def write_claim(run_dir: Path, **claim) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CLAIM).write_text(json.dumps(claim))


def test_the_names_that_make_a_dir_taken():
    """The lists are the contract with train/explain/evaluate/segment/markers/sweeps and Hydra: spelled out here."""
    assert CLAIM == ".cxrcam-run.json"
    assert OUTPUTS == ("checkpoints", "split.csv", "metrics.csv", "metrics.json", "test_metrics.json",
                       "test_predictions.csv", "predictions.csv", "cams.npz", "overlays", "panels", "comparison.png",
                       "comparison.csv", "comparison.md", "cam_metrics.json", "cam_metrics.csv", "report.html",
                       "report.md", "figures", "multirun.yaml", "masks", "markers.csv")
    assert ARTIFACTS == (CLAIM, *OUTPUTS)
    assert HYDRA_LOGS == ("train.log", "explain.log", "evaluate.log", "segment.log", "markers.log")
    assert HYDRA_ARTIFACTS == (".hydra", "train.log", "explain.log", "evaluate.log", "segment.log", "markers.log")


# --- try_claim -------------------------------------------------------------------------------------

def test_a_claim_names_stage_process_host_start_and_this_process(tmp_path, fixed_clock, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "991")
    run_dir = tmp_path / "a" / "b" / "run"  # parents are made
    old_umask = os.umask(0o022)
    try:
        assert try_claim(run_dir, "evaluate") is None
    finally:
        os.umask(old_umask)
    assert claim_of(run_dir) == {"stage": "evaluate", "pid": os.getpid(), "host": socket.gethostname(),
                                 "started": STARTED, "token": rundir._PROCESS_TOKEN, "slurm_job": "991"}
    assert fixed_clock == ["%Y-%m-%d %H:%M:%S"]
    assert re.fullmatch("[0-9a-f]{32}", rundir._PROCESS_TOKEN)
    assert stat.S_IMODE((run_dir / CLAIM).stat().st_mode) == 0o644
    assert [p.name for p in run_dir.iterdir()] == [CLAIM]


def test_an_existing_empty_dir_is_claimed(tmp_path):
    assert try_claim(tmp_path, "train") is None
    assert claim_of(tmp_path)["stage"] == "train"


def test_a_relative_dir_is_claimed_where_it_resolves(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x").mkdir()
    assert try_claim("x/../run", "train") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "x"]
    assert claim_of(tmp_path / "run")["stage"] == "train"


def test_a_claimed_dir_says_who_holds_it(tmp_path):
    write_claim(tmp_path, stage="train", started=STARTED, pid=123, host="node7", token="other")
    reason = f"holds a cxrcam.train run started {STARTED} (pid 123 on node7)"
    assert try_claim(tmp_path, "explain") == reason
    assert try_claim(tmp_path, "explain", include_hydra=False) == reason
    assert claim_of(tmp_path)["pid"] == 123  # the holder's claim is left as it was


@pytest.mark.parametrize("include_hydra", [True, False])
def test_outputs_are_listed_in_order_and_the_dir_is_left_untouched(tmp_path, include_hydra):
    for name in ("figures", "split.csv", "notes.txt"):  # notes.txt is nobody's output
        (tmp_path / name).write_text("earlier")
    assert try_claim(tmp_path, "train", include_hydra) == "already holds cxrcam outputs (split.csv, figures)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures", "notes.txt", "split.csv"]


def test_hydra_files_take_a_dir_only_when_hydra_files_count(tmp_path):
    for name in HYDRA_ARTIFACTS:
        (tmp_path / name).write_text("hydra")
    assert try_claim(tmp_path, "train") == ("already holds cxrcam outputs "
                                            "(.hydra, train.log, explain.log, evaluate.log, segment.log, markers.log)")
    assert not (tmp_path / CLAIM).exists()
    assert try_claim(tmp_path, "train", include_hydra=False) is None
    assert claim_of(tmp_path)["stage"] == "train"


@pytest.mark.parametrize("name", HYDRA_ARTIFACTS)
def test_each_hydra_file_alone_takes_a_dir_by_default(tmp_path, name):
    (tmp_path / name).write_text("hydra")
    assert try_claim(tmp_path, "train") == f"already holds cxrcam outputs ({name})"


def test_a_dir_that_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "file").write_text("not a dir")
    with pytest.raises(CxrcamError) as exc:
        try_claim(tmp_path / "file" / "run", "train")
    assert str(exc.value) == (f"cannot create run dir {tmp_path / 'file' / 'run'}: Not a directory; "
                              "choose a writable hydra.run.dir")
    assert exc.value.__cause__ is None and exc.value.__suppress_context__


def test_a_dir_without_write_permission_is_one_line(tmp_path, monkeypatch):
    real_open = os.open

    def refuse_claim(path, *args):
        if Path(path).name == CLAIM:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, *args)

    monkeypatch.setattr(rundir.os, "open", refuse_claim)
    with pytest.raises(CxrcamError) as exc:
        try_claim(tmp_path / "run", "train")
    assert str(exc.value) == (f"cannot write in run dir {tmp_path / 'run'}: Permission denied; "
                              "choose a writable hydra.run.dir")
    assert exc.value.__cause__ is None and exc.value.__suppress_context__


def test_of_two_processes_racing_for_one_dir_the_second_is_refused_by_the_claim_file(tmp_path, monkeypatch):
    """Both found the dir free; the other created the claim file first: it is not overwritten."""
    write_claim(tmp_path, stage="train", started=STARTED, pid=9, host="h", token="other")
    monkeypatch.setattr(rundir, "_why_taken", lambda run_dir, include_hydra: None)
    assert try_claim(tmp_path, "evaluate") == f"holds a cxrcam.train run started {STARTED} (pid 9 on h)"
    assert claim_of(tmp_path) == {"stage": "train", "started": STARTED, "pid": 9, "host": "h", "token": "other"}


# --- who holds a dir ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["", "{not json", "{}", '{"stage": "train"}', "[1, 2]", '"text"', "3"],
                         ids=["empty", "partial", "no-keys", "some-keys", "list", "string", "number"])
def test_an_unreadable_claim_is_read_again_for_a_second_then_named_another_run(tmp_path, monkeypatch, text):
    sleeps = []
    monkeypatch.setattr(rundir.time, "sleep", sleeps.append)
    (tmp_path / CLAIM).write_text(text)
    assert try_claim(tmp_path, "train") == "holds another cxrcam run"
    assert sleeps == [0.05] * 20


def test_a_claim_removed_while_being_read_is_named_another_run(tmp_path, monkeypatch):
    monkeypatch.setattr(rundir.time, "sleep", lambda seconds: None)
    assert rundir._holder(tmp_path) == "another cxrcam run"


def test_a_claim_whose_text_arrives_while_waiting_names_its_run(tmp_path, monkeypatch):
    """A racing process has created the claim file but not yet written it."""
    (tmp_path / CLAIM).write_text("")
    sleeps = []

    def the_text_arrives(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 3:
            write_claim(tmp_path, stage="explain", started=STARTED, pid=5, host="h", token="other")

    monkeypatch.setattr(rundir.time, "sleep", the_text_arrives)
    assert try_claim(tmp_path, "train") == f"holds a cxrcam.explain run started {STARTED} (pid 5 on h)"
    assert sleeps == [0.05] * 3


# --- claim_run_dir and the hand-over from claim_before_hydra ----------------------------------------

def test_a_stage_refused_a_dir_says_which_dir_why_and_what_to_do(tmp_path):
    (tmp_path / "cams.npz").write_text("earlier")
    with pytest.raises(CxrcamError) as exc:
        claim_run_dir(tmp_path / "x" / "..", "explain")
    assert str(exc.value) == (f"{tmp_path} already holds cxrcam outputs (cams.npz); "
                              "set hydra.run.dir to a new folder")
    write_claim(tmp_path / "held", stage="train", started=STARTED, pid=1, host="h")
    with pytest.raises(CxrcamError) as exc:
        claim_run_dir(tmp_path / "held", "train", hint="or resume")
    assert str(exc.value) == f"{tmp_path / 'held'} holds a cxrcam.train run started {STARTED} (pid 1 on h); or resume"


def test_a_stage_claims_a_dir_holding_only_hydra_files(tmp_path, fixed_clock):
    for name in HYDRA_ARTIFACTS:
        (tmp_path / name).write_text("hydra")
    claim_run_dir(tmp_path, "evaluate")
    assert claim_of(tmp_path) == {"stage": "evaluate", "pid": os.getpid(), "host": socket.gethostname(),
                                  "started": STARTED, "token": rundir._PROCESS_TOKEN, "slurm_job": None}


def test_the_stage_after_the_entry_point_takes_its_claim_over_once(tmp_path):
    run_dir = tmp_path / "run"
    assert claim_before_hydra(tmp_path / "x" / ".." / "run", "train") is None
    assert claim_of(run_dir)["stage"] == "train"
    (run_dir / ".hydra").mkdir()  # Hydra writes its files between the two
    claim_run_dir(run_dir, "evaluate")  # taken over: the claim is not rewritten
    assert claim_of(run_dir)["stage"] == "train"
    with pytest.raises(CxrcamError, match=re.escape(f"{run_dir} holds a cxrcam.train run started")):
        claim_run_dir(run_dir, "evaluate")  # a second stage in this process is not handed the dir


def test_a_dir_refused_before_hydra_is_not_handed_over(tmp_path):
    (tmp_path / ".hydra").mkdir()
    assert claim_before_hydra(tmp_path, "explain") == "already holds cxrcam outputs (.hydra)"
    assert not (tmp_path / CLAIM).exists()
    (tmp_path / "cams.npz").write_text("earlier")
    with pytest.raises(CxrcamError, match=re.escape("already holds cxrcam outputs (cams.npz)")):
        claim_run_dir(tmp_path, "explain")


def test_a_claim_before_hydra_counts_hydra_files(tmp_path):
    (tmp_path / "explain.log").write_text("log")
    assert claim_before_hydra(tmp_path, "explain") == "already holds cxrcam outputs (explain.log)"


# --- release_if_unused -------------------------------------------------------------------------------

def test_an_unused_dir_is_given_back_with_hydra_files_and_other_files_kept(tmp_path):
    assert claim_before_hydra(tmp_path, "train") is None
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("a: 1")
    for name in (*HYDRA_LOGS, "notes.txt"):
        (tmp_path / name).write_text("x")
    release_if_unused(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_a_given_back_dir_is_no_longer_handed_over(tmp_path):
    assert claim_before_hydra(tmp_path, "train") is None
    release_if_unused(tmp_path / "x" / "..")
    assert not (tmp_path / CLAIM).exists()
    claim_run_dir(tmp_path, "evaluate")  # claims it anew
    assert claim_of(tmp_path)["stage"] == "evaluate"


def test_a_claim_alone_is_given_back(tmp_path):
    """No .hydra and no logs to remove: nothing fails."""
    assert try_claim(tmp_path, "train") is None
    release_if_unused(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("output", OUTPUTS)
def test_a_dir_with_an_output_is_kept_whole(tmp_path, output):
    assert try_claim(tmp_path, "train") is None
    (tmp_path / ".hydra").mkdir()
    (tmp_path / "train.log").write_text("x")
    (tmp_path / output).write_text("result")
    release_if_unused(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CLAIM, ".hydra", "train.log", output])


@pytest.mark.parametrize("text", [json.dumps({"stage": "train", "token": "another process"}), json.dumps({}),
                                  "{not json", "[1, 2]"],
                         ids=["other-token", "no-token", "partial", "list"])
def test_a_dir_claimed_by_another_process_or_unreadably_is_kept(tmp_path, text):
    (tmp_path / CLAIM).write_text(text)
    (tmp_path / "train.log").write_text("x")
    release_if_unused(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CLAIM, "train.log"])
    assert (tmp_path / CLAIM).read_text() == text


def test_a_dir_without_a_claim_is_left_alone(tmp_path):
    (tmp_path / "train.log").write_text("x")
    release_if_unused(tmp_path)
    release_if_unused(tmp_path / "missing")
    assert [p.name for p in tmp_path.iterdir()] == ["train.log"]


@pytest.mark.parametrize("job, restarts, claimed_by, expected", [
    ("7", "1", "7", True), ("7", "3", "7", True),
    ("7", "0", "7", False),  # the first run of the job: the dir is another run's
    ("7", None, "7", False), ("8", "1", "7", False), (None, "1", None, False)])
def test_only_a_requeue_of_the_claiming_slurm_job_may_take_its_dir_over(tmp_path, monkeypatch, job, restarts,
                                                                          claimed_by, expected):
    for key, value in (("SLURM_JOB_ID", claimed_by), ("SLURM_RESTART_COUNT", None)):
        monkeypatch.delenv(key, raising=False) if value is None else monkeypatch.setenv(key, value)
    assert rundir.try_claim(tmp_path / "run", "train") is None
    for key, value in (("SLURM_JOB_ID", job), ("SLURM_RESTART_COUNT", restarts)):
        monkeypatch.delenv(key, raising=False) if value is None else monkeypatch.setenv(key, value)
    assert rundir.is_requeue_of_its_claimant(tmp_path / "run") is expected
    if expected:
        rundir.claim_run_dir(tmp_path / "run", "train")
        assert json.loads((tmp_path / "run" / rundir.CLAIM).read_text())["slurm_job"] == job
    else:
        with pytest.raises(CxrcamError, match="holds a cxrcam.train run started"):
            rundir.claim_run_dir(tmp_path / "run", "train")
    assert rundir.is_requeue_of_its_claimant(tmp_path / "elsewhere") is False
