"""Data-parallel training over several processes (DDP): who this process is, from torchrun's or
SLURM's environment, and the few collective steps the trainer needs. One process is world 1 and
every function here is then a no-op."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from cxrcam.errors import CxrcamError


@dataclass(frozen=True)
class Processes:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``gpu[03-05,9],cpu1`` → ``gpu03``."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist)
    if match is None:
        raise CxrcamError(f"cannot read the SLURM node list {nodelist!r}; set MASTER_ADDR to the first node's host")
    prefix, ranges = match.groups()
    return prefix + (re.split(r"[-,]", ranges)[0] if ranges else "")


def processes_from_env(env: dict[str, str] | None = None) -> Processes:
    """torchrun's RANK / WORLD_SIZE / LOCAL_RANK, else a SLURM job step's tasks (srun with several
    tasks, as submitit starts them), else one process. For SLURM, MASTER_ADDR and MASTER_PORT are
    set from the job (first node, a port derived from the job id) unless already set."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        return Processes(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
                         int(env.get("LOCAL_WORLD_SIZE", 1)))
    tasks = int(env.get("SLURM_NTASKS", 1))
    if "SLURM_PROCID" in env and tasks > 1:
        env.setdefault("MASTER_ADDR", first_host(env.get("SLURM_JOB_NODELIST") or env["SLURM_NODELIST"]))
        env.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", 0)) % 20000))
        per_node = tasks // max(int(env.get("SLURM_JOB_NUM_NODES", env.get("SLURM_NNODES", 1))), 1)
        return Processes(int(env["SLURM_PROCID"]), tasks, int(env.get("SLURM_LOCALID", 0)), per_node)
    return Processes()


def start(processes: Processes, device: torch.device, timeout_min: float) -> None:
    """Join the process group (NCCL on CUDA, Gloo otherwise) once per process. A collective that
    waits longer than ``timeout_min`` for a dead or stuck rank fails instead of hanging."""
    if processes.world == 1 or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    dist.init_process_group(backend, init_method="env://", rank=processes.rank, world_size=processes.world,
                            timeout=timedelta(minutes=timeout_min),
                            device_id=device if device.type == "cuda" else None)
    atexit.register(dist.destroy_process_group)


def device_of(processes: Processes, device: torch.device) -> torch.device:
    """Each process on a node takes its own GPU."""
    if processes.world > 1 and device.type == "cuda":
        device = torch.device("cuda", processes.local_rank)
        torch.cuda.set_device(device)
    return device


def broadcast(value, processes: Processes):
    """Rank 0's ``value`` on every rank (any picklable value)."""
    if processes.world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(processes: Processes) -> None:
    if processes.world > 1:
        dist.barrier()


def gather_objects(value, processes: Processes) -> list:
    """Every rank's ``value`` (any picklable value), in rank order, on every rank."""
    if processes.world == 1:
        return [value]
    values = [None] * processes.world
    dist.all_gather_object(values, value)
    return values


def gather_shards(shard: tuple[torch.Tensor, ...], processes: Processes) -> tuple[torch.Tensor, ...]:
    """Tensors of every rank's shard (rank r holds items r, r + world, ...) back in split order."""
    if processes.world == 1:
        return shard
    gathered = []
    for part in zip(*gather_objects(shard, processes), strict=True):
        biggest = max(part, key=len)  # an empty shard (a split smaller than the world) has no shape to go by
        whole = biggest.new_empty((sum(len(p) for p in part), *biggest.shape[1:]))
        for rank, p in enumerate(part):
            if len(p):
                whole[rank::processes.world] = p
        gathered.append(whole)
    return tuple(gathered)


def total(value: torch.Tensor, processes: Processes) -> torch.Tensor:
    """The sum of ``value`` over ranks (a new tensor; ``value`` is left as it was)."""
    value = value.clone()
    if processes.world > 1:
        dist.all_reduce(value)
    return value


def any_rank(flag: bool, processes: Processes, device: torch.device) -> bool:
    """Whether ``flag`` is set on any rank: every rank gets the same answer, so all stop together."""
    if processes.world == 1:
        return flag
    return bool(total(torch.tensor(float(flag), device=device), processes).item())


def scratch_hydra_dirs(argv: list[str], processes: Processes) -> list[str]:
    """Hydra resolves ``${now:}`` in each process, so under torchrun every rank would name its own run
    dir (hydra#2070). Ranks other than 0 get a scratch dir for Hydra's files, removed at exit; the
    trainer takes rank 0's run dir, and only rank 0 writes there."""
    if processes.is_main:
        return argv
    scratch = tempfile.mkdtemp(prefix=f"cxrcam-rank{processes.rank}-")
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    return [*argv, f"hydra.run.dir={scratch}/run", f"hydra.sweep.dir={scratch}/sweep", "hydra.output_subdir=null"]
