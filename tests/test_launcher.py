"""Sweeps through the submitit launcher (hydra/launcher=slurm or local, the [slurm] extra)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_train_overrides

from cxrcam.cli import LAUNCHER_PLUGIN, unusable_launcher
from cxrcam.config import config_dir
from cxrcam.rundir import CLAIM

PIP_LINE = "needs the submitit launcher plugin: pip install 'cxrcam[slurm]'"
NEEDS_SWEEP = "launches the jobs of a sweep: add -m (one run is a sweep of one)"
NO_SRUN = ("hydra/launcher=slurm submits with SLURM's srun, which is not on PATH here: run it on the cluster's "
           "login node (hydra/launcher=local runs the same jobs on this machine)")


def _train(*args: str, cwd: Path, python: tuple[str, ...] = ("-m", "cxrcam.train"),
           **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *python, *args], cwd=cwd, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=240, check=False)


def _without_plugin(monkeypatch, how: str) -> None:
    """Make the plugin look uninstalled to importlib: with no other Hydra plugin, hydra_plugins itself is
    missing; beside another one, only ours is."""
    if how == "no hydra_plugins":
        monkeypatch.delitem(sys.modules, LAUNCHER_PLUGIN, raising=False)
        monkeypatch.setitem(sys.modules, "hydra_plugins", None)
    else:
        monkeypatch.setitem(sys.modules, LAUNCHER_PLUGIN, None)


@pytest.mark.parametrize("how", ["no hydra_plugins", "another plugin only"])
@pytest.mark.parametrize("argv", [["-m", "hydra/launcher=slurm", "model=simple_cnn"], ["-m", "hydra/launcher=local"],
                                  ["--cfg", "hydra", "hydra/launcher=slurm"]])
def test_our_launchers_without_the_extra_name_the_pip_command(monkeypatch, how, argv):
    _without_plugin(monkeypatch, how)
    launcher = next(a for a in argv if a.startswith("hydra/launcher="))
    assert unusable_launcher(argv, config_dir()) == f"{launcher} {PIP_LINE}"


@pytest.mark.parametrize("argv", [["-m", "model=a,b"], ["-m", "hydra/launcher=basic"],
                                  ["-m", "hydra/launcher=submitit_slurm"], ["hydra/launcher=slrum"]])
def test_other_launchers_do_not_need_the_extra(monkeypatch, argv):
    _without_plugin(monkeypatch, "no hydra_plugins")
    assert unusable_launcher(argv, config_dir()) is None


@pytest.fixture()
def path_with_srun(tmp_path, monkeypatch) -> None:
    """PATH with an ``srun`` on it, as on a cluster's login node."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))


@pytest.mark.parametrize("argv, reason", [
    (["hydra/launcher=slurm", "model=a"], f"hydra/launcher=slurm {NEEDS_SWEEP}"),
    (["hydra/launcher=local"], f"hydra/launcher=local {NEEDS_SWEEP}"),
    (["hydra/launcher=local", "hydra.mode=MULTIRUN"], None),
    (["-m", "hydra/launcher=local"], None),
    (["-m", "hydra/launcher=slurm"], None),
    (["--multirun", "hydra/launcher=slurm", "model=simple_cnn,resnet50"], None),
    (["--cfg", "hydra", "hydra/launcher=slurm"], None),
    (["--info", "config", "hydra/launcher=slurm"], None),
])
def test_with_the_extra_a_launcher_needs_a_sweep(path_with_srun, argv, reason):
    pytest.importorskip(LAUNCHER_PLUGIN, reason="the [slurm] extra is not installed")
    assert unusable_launcher(argv, config_dir()) == reason


def test_the_slurm_launcher_needs_srun_the_local_one_does_not(tmp_path, monkeypatch):
    pytest.importorskip(LAUNCHER_PLUGIN, reason="the [slurm] extra is not installed")
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun there
    assert unusable_launcher(["-m", "hydra/launcher=slurm"], config_dir()) == NO_SRUN
    assert unusable_launcher(["--cfg", "hydra", "hydra/launcher=slurm"], config_dir()) is None
    assert unusable_launcher(["-m", "hydra/launcher=local"], config_dir()) is None


@pytest.mark.child_process
def test_without_the_extra_the_command_stops_with_one_line_before_hydra(tmp_path):
    hide_plugin = ("import runpy, sys; sys.modules['hydra_plugins'] = None; "
                   "runpy.run_module('cxrcam.train', run_name='__main__', alter_sys=True)")
    result = _train("-m", "hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path,
                    python=("-c", hide_plugin))
    assert result.returncode == 2
    assert result.stderr.strip() == f"cxrcam.train: error: hydra/launcher=slurm {PIP_LINE}"
    assert not (tmp_path / "sweep").exists()


@pytest.mark.child_process
def test_the_slurm_launcher_off_a_cluster_stops_before_the_sweep_dir_is_made(tmp_path):
    pytest.importorskip(LAUNCHER_PLUGIN, reason="the [slurm] extra is not installed")
    result = _train("-m", "hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path,
                    PATH=str(tmp_path))  # no srun there
    assert result.returncode == 2 and result.stderr.strip() == f"cxrcam.train: error: {NO_SRUN}"
    assert not (tmp_path / "sweep").exists()


@pytest.mark.child_process
@pytest.mark.slow
def test_a_sweep_through_submitit_writes_the_comparison_table_when_its_jobs_end(tiny_synthetic, tmp_path):
    """Every job is a process of its own (submitit's local executor, the SLURM launcher's rehearsal):
    the launching process claims the sweep dir, each job its subdir, and the table comes after the last."""
    pytest.importorskip(LAUNCHER_PLUGIN, reason="the [slurm] extra is not installed")
    sweep = tmp_path / "sweep"
    models = ["resnet50", "densenet121", "simple_cnn"]
    result = _train("-m", "hydra/launcher=local", f"hydra.sweep.dir={sweep}",
                    *tiny_train_overrides(tiny_synthetic, f"model={','.join(models)}", "trainer.epochs=1"),
                    cwd=tmp_path, OMP_NUM_THREADS="1")  # three jobs at once on the test machine's cores
    assert result.returncode == 0, result.stderr[-2000:]
    runs = [f"{n}_{model}" for n, model in enumerate(models)]
    with open(sweep / "comparison.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["run"], r["model"]) for r in rows] == list(zip(runs, models))
    table = (sweep / "comparison.md").read_text()
    for run, model in zip(runs, models):
        assert f"| {run} | {model} |" in table
        assert (sweep / run / "checkpoints" / "best.pt").is_file() and (sweep / run / "checkpoints" / "last.pt").is_file()
    pids = [json.loads((d / CLAIM).read_text())["pid"] for d in (sweep, *(sweep / run for run in runs))]
    assert len(set(pids)) == 4  # the launching process and three job processes
    assert len(list((sweep / ".submitit").glob("*/*_0_log.out"))) == 3  # submitit's logs, one per job
