"""Training past one process: torchrun (DDP), the environment of a SLURM job, and the stop signals
a cluster sends before it preempts a job."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from torch import nn

from cxrcam.errors import CxrcamError, StoppedBySignal
from cxrcam.training import distributed
from cxrcam.checkpoint import load_checkpoint
from cxrcam.training.distributed import Processes, first_host, gather_shards, processes_from_env, scratch_hydra_dirs
from cxrcam.signals import StopSignals, ignore_stop_signals

from conftest import (RESUMED_CASE, assert_same_training, run_tiny, signal_training_after_its_first_epoch,
                      tiny_train_overrides)

# --- who this process is ---------------------------------------------------------------------

@pytest.mark.parametrize("nodelist, host", [("gpu07", "gpu07"), ("gpu[03-05,9]", "gpu03"), ("a[1,4],b2", "a1"),
                                            ("node-x[010-012]", "node-x010"), ("c1,c2", "c1")])
def test_the_first_host_of_a_slurm_node_list(nodelist, host):
    assert first_host(nodelist) == host


def test_torchrun_environment_names_rank_world_and_local_rank():
    env = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "SLURM_PROCID": "0",
           "SLURM_NTASKS": "4"}
    assert processes_from_env(env) == Processes(3, 8, 1, 2)  # torchrun inside a SLURM job wins


def test_a_slurm_job_step_of_several_tasks_is_a_process_group_with_its_first_node_as_master():
    env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_JOB_NUM_NODES": "2",
           "SLURM_JOB_NODELIST": "gpu[12-13]", "SLURM_JOB_ID": "123456"}
    processes = processes_from_env(env)
    assert processes == Processes(5, 8, 1, 4) and not processes.is_main
    assert env["MASTER_ADDR"] == "gpu12" and env["MASTER_PORT"] == str(20000 + 123456 % 20000)
    env = {**env, "MASTER_ADDR": "head", "MASTER_PORT": "29500"}
    processes_from_env(env)
    assert (env["MASTER_ADDR"], env["MASTER_PORT"]) == ("head", "29500")  # set by the user: kept


@pytest.mark.parametrize("env", [{}, {"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_JOB_NODELIST": "gpu1"}])
def test_one_process_or_a_one_task_slurm_job_is_world_one(env):
    processes = processes_from_env(env)
    assert processes == Processes(0, 1, 0, 1) and processes.is_main and "MASTER_ADDR" not in env


def test_gathered_shards_come_back_in_split_order(monkeypatch):
    """Rank r predicted items r, r + world, ...; the gathered tensors are the split's order again."""
    shards = [(torch.tensor([0.0, 3.0, 6.0]), torch.tensor([[0, 0], [3, 3], [6, 6]])),
              (torch.tensor([1.0, 4.0]), torch.tensor([[1, 1], [4, 4]])),
              (torch.tensor([2.0, 5.0]), torch.tensor([[2, 2], [5, 5]]))]
    monkeypatch.setattr(distributed, "gather_objects", lambda value, processes: shards)
    values, rows = gather_shards(shards[1], Processes(1, 3))
    assert torch.equal(values, torch.arange(7.0)) and torch.equal(rows, torch.arange(7).repeat_interleave(2).view(7, 2))
    empty = [(torch.tensor([0.0]),), (torch.zeros(0),), (torch.zeros(0),)]  # a split smaller than the world
    monkeypatch.setattr(distributed, "gather_objects", lambda value, processes: empty)
    assert torch.equal(gather_shards(empty[0], Processes(0, 3))[0], torch.tensor([0.0]))


def test_one_process_gathers_nothing():
    shard = (torch.tensor([1.0, 2.0]),)
    assert gather_shards(shard, Processes()) is shard


def test_ranks_other_than_0_give_hydra_a_scratch_dir_removed_at_exit():
    argv = ["cxrcam.train", "model=resnet50"]
    assert scratch_hydra_dirs(argv, Processes(0, 2)) == argv
    script = ("import sys; from cxrcam.training.distributed import Processes, scratch_hydra_dirs; "
              "print(scratch_hydra_dirs(['x'], Processes(1, 2))[1:])")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    run_dir, sweep_dir, no_subdir = eval(out)  # noqa: S307  (our own list literal)
    assert run_dir.startswith("hydra.run.dir=") and "cxrcam-rank1-" in run_dir
    assert sweep_dir.startswith("hydra.sweep.dir=") and no_subdir == "hydra.output_subdir=null"
    assert not os.path.exists(run_dir.split("=", 1)[1].rsplit("/", 1)[0])  # removed when the process ended


# --- stop signals ----------------------------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2])
def test_a_stop_signal_is_remembered_then_handed_to_the_previous_handler(signum):
    seen = []
    before = signal.signal(signum, lambda s, frame: seen.append(s))
    try:
        with StopSignals() as stop:
            assert not stop()
            os.kill(os.getpid(), signum)
            assert stop() and stop.received == signum and stop.name == signal.Signals(signum).name
            assert seen == []  # remembered only, until the trainer has saved
            stop.hand_over()
            assert seen == [signum]
        assert signal.getsignal(signum) is not stop._remember
    finally:
        signal.signal(signum, before)


def test_handing_over_to_the_default_handler_returns():
    before = signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    try:
        with StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGUSR1)
            stop.hand_over()  # SIG_DFL is not called: the trainer then stops with its own line
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGUSR1, before)


def signalling_loss(signum: int, at_call: int) -> type[nn.CrossEntropyLoss]:
    """A cross-entropy that sends this process ``signum`` on its ``at_call``-th step (RESUMED_CASE:
    8 steps an epoch), as a cluster would in the middle of one."""
    class SignallingLoss(nn.CrossEntropyLoss):
        calls = 0

        def forward(self, logits, labels):
            SignallingLoss.calls += 1
            if SignallingLoss.calls == at_call:
                os.kill(os.getpid(), signum)
            return super().forward(logits, labels)

    return SignallingLoss


@pytest.mark.slow
def test_sigterm_mid_epoch_saves_that_step_and_a_resume_equals_an_uninterrupted_run(tiny_synthetic, uninterrupted_run,
                                                                                     tmp_path, monkeypatch):
    monkeypatch.setattr("cxrcam.train.nn.CrossEntropyLoss", signalling_loss(signal.SIGTERM, 12))  # epoch 2, step 4
    with pytest.raises(StoppedBySignal, match="stopped by SIGTERM at epoch 2 after step 4; to continue: ") as info:
        run_tiny(tiny_synthetic, tmp_path / "part", *RESUMED_CASE)
    assert info.value.signum == signal.SIGTERM
    state = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")["training"]
    assert state["epoch"] == 1 and state["partial_epoch"]["step"] == 4 and state["partial_epoch"]["images"] == 8
    monkeypatch.undo()
    run_tiny(tiny_synthetic, tmp_path / "resumed", *RESUMED_CASE,
             f"resume={tmp_path / 'part' / 'checkpoints' / 'last.pt'}")
    assert_same_training(tmp_path / "resumed", uninterrupted_run)


@pytest.mark.child_process
def test_sigterm_to_a_training_process_exits_143_with_one_line_and_it_resumes(tiny_synthetic, tmp_path):
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.pt"
    returncode, err = signal_training_after_its_first_epoch(tiny_synthetic, run_dir, signal.SIGTERM,
                                                            "optim.scheduler=none")
    assert returncode == 128 + signal.SIGTERM and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("cxrcam.train: stopped by SIGTERM at epoch ")
    assert line.endswith(f"; to continue: python -m cxrcam.train <the same overrides> resume={last} (into a new run "
                         "dir: drop or change hydra.run.dir)")
    epoch, step = (int(word) for word in line.split("at epoch ")[1].split(";")[0].split(" after step "))
    state = load_checkpoint(last)["training"]
    partial = state["partial_epoch"]
    assert (state["epoch"], partial["step"] if partial else 8) == (epoch - (partial is not None), step)
    report = run_tiny(tiny_synthetic, tmp_path / "resumed", "trainer.epochs=200", "data.batch_size=2",
                      "optim.scheduler=none", f"trainer.epochs={epoch + 1}", f"resume={last}")
    resumed = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["training"]
    assert report["epochs"] == epoch + 1 and [row["epoch"] for row in resumed["history"]] == list(range(1, epoch + 2))


# --- torchrun ----------------------------------------------------------------------------------

def _torchrun(*overrides: str, cwd) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "cxrcam.train", *overrides]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.child_process
def test_torchrun_two_processes_train_and_resume_as_one_with_the_same_global_batch(tiny_synthetic, tmp_path):
    """Epoch 1 under torchrun, epoch 2 resumed under torchrun, against one process with the same
    global batch. Exactly: one run dir (named by rank 0), one split, the same images and
    augmentation at every global step, every val and test image scored once in split order. To
    float rounding (the gradient all-reduce sums in another order): weights, losses and
    probabilities. SimpleCNN without dropout and class weights: no batch statistics, no
    per-process normalisation."""
    same = ("model.dropout=0", "trainer.class_balance=none")
    outputs = tmp_path / "outputs"
    _torchrun(*tiny_train_overrides(tiny_synthetic, *same, "data.batch_size=4", "trainer.epochs=1"),
              f"paths.output_dir={outputs}", cwd=tmp_path)
    (first,) = (outputs / "runs").iterdir()  # rank 1's ${now:} named no dir of its own
    assert not list(tmp_path.glob("*/cxrcam-rank1-*"))
    two = tmp_path / "two"
    _torchrun(*tiny_train_overrides(tiny_synthetic, *same, "data.batch_size=4", "trainer.epochs=2"),
              f"resume={first / 'checkpoints' / 'last.pt'}", f"hydra.run.dir={two}", cwd=tmp_path)
    run_tiny(tiny_synthetic, tmp_path / "one", *same, "data.batch_size=8", "trainer.epochs=2")
    one = tmp_path / "one"

    assert (first / "split.csv").read_bytes() == (two / "split.csv").read_bytes() == (one / "split.csv").read_bytes()
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    report = json.loads((two / "test_metrics.json").read_text())
    assert (report["processes"], report["batch_size_per_process"], report["global_batch_size"]) == (2, 4, 8)
    assert "2 process(es) x batch 4 = global batch 8" in (first / "train.log").read_text()
    with open(two / "split.csv") as f:
        test_paths = [row["path"] for row in csv.DictReader(f) if row["split"] == "test"]
    rows = {}
    for run in (one, two):
        with open(run / "test_predictions.csv") as f:
            rows[run] = list(csv.DictReader(f))
    assert [r["path"] for r in rows[two]] == test_paths == [r["path"] for r in rows[one]]
    for a, b in zip(rows[one], rows[two], strict=True):
        assert all(abs(float(a[k]) - float(b[k])) < 1e-5 for k in a if k.startswith("p_"))
    assert sum(c["support"] for c in report["per_class"].values()) == len(test_paths)

    trained, reference = (load_checkpoint(run / "checkpoints" / "last.pt") for run in (two, one))
    for key, tensor in reference["state_dict"].items():
        assert torch.allclose(trained["state_dict"][key], tensor, atol=1e-5, rtol=1e-4), key
    assert [row["epoch"] for row in trained["training"]["history"]] == [1, 2]
    for a, b in zip(reference["training"]["history"], trained["training"]["history"], strict=True):
        assert a["val_accuracy"] == b["val_accuracy"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)
    assert len(trained["training"]["rng"]) == 2 and trained["training"]["processes"] == 2


@pytest.mark.slow
@pytest.mark.child_process
def test_torchrun_ranks_stop_early_at_the_same_epoch(tiny_synthetic, tmp_path):
    """Both ranks must leave the loop together: one going on alone would wait in a collective until
    the timeout. At lr 1e-12 nothing improves after epoch 1, so patience 2 stops both after epoch 3."""
    run = tmp_path / "run"
    _torchrun(*tiny_train_overrides(tiny_synthetic, "data.batch_size=4", "optim.lr=1e-12", "trainer.epochs=10",
                                    "trainer.early_stop_patience=2", "trainer.dist_timeout_min=1"),
              f"hydra.run.dir={run}", cwd=tmp_path)
    report = json.loads((run / "test_metrics.json").read_text())
    assert (report["processes"], report["stopped_early"], report["epochs_run"], report["best_epoch"]) == (2, True, 3, 1)
    logged = (run / "train.log").read_text()
    assert "early stop after epoch 3: no better val macro-F1 for 2 epochs; best epoch 1" in logged


@pytest.mark.slow
def test_a_checkpoint_of_two_processes_resumes_only_with_two(tiny_synthetic, tmp_path):
    run_tiny(tiny_synthetic, tmp_path / "run", "trainer.epochs=1")
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    payload = load_checkpoint(last)
    payload["training"]["processes"] = 2
    torch.save(payload, last)
    with pytest.raises(CxrcamError, match=r"^cannot resume with 1 process\(es\): the checkpoint was trained by 2, "
                                          "and data.batch_size is per process, so the global batch would change; "
                                          "resume with 2$"):
        run_tiny(tiny_synthetic, tmp_path / "resumed", "trainer.epochs=2", f"resume={last}")


# --- faults ------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("where", ["cxrcam.train.train_one_epoch", "cxrcam.train.predict_split"])
def test_out_of_memory_names_the_batch_size_and_image_size(tiny_synthetic, tmp_path, monkeypatch, where):
    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(where, out_of_memory)
    with pytest.raises(CxrcamError) as info:
        run_tiny(tiny_synthetic, tmp_path, "data.batch_size=4")
    assert str(info.value) == ("cpu ran out of memory with data.batch_size=4 (per process) at data.image_size=32; "
                               "lower data.batch_size (or the image size)")


@pytest.mark.slow
def test_a_requeued_slurm_job_takes_its_dir_back_and_continues_from_the_step_it_saved(tiny_synthetic, uninterrupted_run,
                                                                                       tmp_path, monkeypatch):
    """What submitit's requeue after SIGUSR2 amounts to: the same job id, SLURM_RESTART_COUNT=1, the
    same run dir and config; no resume= given."""
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    with monkeypatch.context() as during:
        during.setattr("cxrcam.train.nn.CrossEntropyLoss", signalling_loss(signal.SIGUSR2, 20))  # epoch 3, step 4
        with pytest.raises(StoppedBySignal, match="stopped by SIGUSR2 at epoch 3 after step 4"):
            run_tiny(tiny_synthetic, tmp_path / "job", *RESUMED_CASE)
    with pytest.raises(CxrcamError, match="holds a cxrcam.train run started"):  # not a requeue: refused
        run_tiny(tiny_synthetic, tmp_path / "job", *RESUMED_CASE)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    run_tiny(tiny_synthetic, tmp_path / "job", *RESUMED_CASE)
    assert_same_training(tmp_path / "job", uninterrupted_run)


def test_trainer_compile_compiles_the_model_it_trains(tiny_synthetic, tmp_path, monkeypatch):
    compiled = []

    def compile_spy(model):
        compiled.append(model)
        return model

    monkeypatch.setattr("cxrcam.train.torch.compile", compile_spy)
    run_tiny(tiny_synthetic, tmp_path / "plain", "trainer.epochs=1")
    assert compiled == []
    run_tiny(tiny_synthetic, tmp_path / "compiled", "trainer.epochs=1", "trainer.compile=true")
    assert len(compiled) == 1 and type(compiled[0]).__name__ == "SimpleCNN"


@pytest.mark.slow
def test_a_compiled_model_trains_like_the_plain_one_and_saves_plain_weights(tiny_synthetic, uninterrupted_run,
                                                                           tmp_path):
    """torch.compile's fused kernels round differently (0.2 % on the first epoch's loss here, Adam
    amplifying it later), no more; the checkpoint holds the model's own parameter names (no
    _orig_mod. prefix) for explain and evaluate."""
    run_tiny(tiny_synthetic, tmp_path, *RESUMED_CASE, "trainer.compile=true")
    compiled, plain = (load_checkpoint(run / "checkpoints" / "last.pt") for run in (tmp_path, uninterrupted_run))
    assert compiled["state_dict"].keys() == plain["state_dict"].keys()
    for a, b in zip(compiled["training"]["history"], plain["training"]["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=3e-2)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=3e-2)


def test_loading_workers_ignore_the_stop_signals_the_trainer_acts_on():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)}
    try:
        ignore_stop_signals(worker_id=3)
        assert {s: signal.getsignal(s) for s in before} == dict.fromkeys(before, signal.SIG_IGN)
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
