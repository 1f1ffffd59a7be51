"""Many processes: the task groups of one run spread over P processes with ``torch.distributed``.

``torchrun --nproc-per-node P run.py ...`` (or P SLURM tasks started by the submitit launcher) starts P copies of
the run; ``init()`` joins them into one process group (gloo: the policies live on the CPU). Rank r
owns the task groups ``r * G/P ... (r + 1) * G/P - 1``: their envs, tasks and masters. What is shared:

- the sub-policies. Every rank holds the same parameters (broadcast from rank 0 at the start). An update
  (``distributed.subpolicy_update``, ``SubPolicyLearner.train``) either gathers each sub-policy's data of all
  ranks to one rank, which trains it while the others train theirs, and sends the result
  (``send_training_state``): "gather"; or has every rank take the same optimizer steps, each minibatch's
  gradient the mean of the joint groups' gradients over all ranks (``GradientMean``: each rank's gradient,
  already the mean over its own joint groups, weighted by their number), counting only the ranks that
  contribute, as the original's MPI-Adam did; a rank without data for a sub-policy still takes part, with
  weight 0, so that every collective is met on every rank: "allreduce" ("auto": gather with at most K processes,
  allreduce with more). ``check_identical`` asserts the parameters bit-identical at an interval (the original:
  every 100 steps);
- the observation filter's statistics (``sync_obs_stats``), merged over ranks after every iteration;
- the loop's view: every rank receives every iteration's metrics, returns, tasks and signals of all, so that all
  take the same decisions; rank 0 alone writes the run folder.

A rank that fails (an exception, a kill) closes its connections; the others' next collective then raises at once,
as ``PeerLost``, an error naming the rank that saw it and the collective. ``torchrun`` stops the remaining
processes and names the rank that failed first.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import torch as th
import torch.distributed as dist

from mlsh import sb3_adapter


class PeerLost(RuntimeError):
    """A collective failed: another process of the run died or stopped answering."""


class World:
    """This process's place in the run: ``rank`` of ``size`` (1: a plain single-process run)."""

    def __init__(self, rank: int = 0, size: int = 1):
        self.rank, self.size = int(rank), int(size)

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def groups(self, n_groups: int) -> list[int]:
        """The task groups this rank owns (``n_groups`` must be a multiple of ``size``)."""
        per = n_groups // self.size
        return list(range(self.rank * per, (self.rank + 1) * per))

    def __repr__(self) -> str:
        return f"World(rank={self.rank}, size={self.size})"


_WORLD = World()
_TIMEOUT_S = 300.0  # the process group's, for the error that names it


def world() -> World:
    return _WORLD


def launched() -> tuple[int, int] | None:
    """(rank, world size) when this process was started as one of several: by torchrun (``RANK``,
    ``WORLD_SIZE``), or as one of several tasks of a job of the submitit launcher (SLURM, or ``submitit_local``),
    whose rendezvous variables it then exports from SLURM's (``submitit.helpers.TorchDistributedEnvironment``).
    None for a single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    executor = os.environ.get("SUBMITIT_EXECUTOR")
    tasks = {"slurm": "SLURM_NTASKS", "local": "SUBMITIT_LOCAL_NTASKS"}.get(executor or "")
    if tasks and int(os.environ.get(tasks, "1")) > 1:
        from submitit.helpers import TorchDistributedEnvironment

        env = TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        return env.rank, env.world_size
    return None


def init(timeout_s: float = 300.0, backend: str | None = None) -> World:
    """Join the run's process group when started as several processes; a no-op otherwise (and when joined)."""
    global _WORLD, _TIMEOUT_S
    where = launched()
    if where is None or dist.is_initialized():
        return _WORLD
    # torch._dynamo (imported by the first optimizer) keeps references to the default process group when imported
    # after it exists (10 of them, in torch 2.13), so destroy_process_group would not free it: gloo's threads would
    # live on into the interpreter's teardown, where one that still releases a finished collective's tensors aborts
    # the process ("terminate called without an active exception", SIGABRT after a finished run, about one run in
    # six of the two-process benchmark). Imported first, it holds none, and shutdown() joins those threads.
    import torch._dynamo  # noqa: F401

    # gloo: the policies live on the CPU (learners.build_ppo); nccl would need them, and every collective, on CUDA
    _TIMEOUT_S = timeout_s
    dist.init_process_group(backend or "gloo", timeout=timedelta(seconds=timeout_s))
    atexit.register(shutdown)  # the process group's threads joined before the interpreter's teardown
    _WORLD = World(dist.get_rank(), dist.get_world_size())
    return _WORLD


def shutdown() -> None:
    global _WORLD
    if dist.is_initialized():
        dist.destroy_process_group()
    _WORLD = World()


@contextlib.contextmanager
def _guard(what: str):
    """Collectives raise ``PeerLost`` naming this rank and the collective when another process is gone."""
    try:
        yield
    except PeerLost:
        raise
    except (RuntimeError, dist.DistBackendError) as err:
        said = str(err).splitlines()[0][:200]
        if "timed out" in said.lower() or "timeout" in said.lower():  # gloo: "Timed out waiting 3000ms for ..."
            why = (f"no answer within distributed.timeout_s={_TIMEOUT_S:g} s: another process of the run is slow or "
                   f"stuck (raise distributed.timeout_s if it was busy)")
        else:
            why = "another process of the run is gone"
        raise PeerLost(f"rank {_WORLD.rank} of {_WORLD.size}: {what} failed, {why} ({said})") from None


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not _WORLD.active:
        return [obj]
    out: list[Any] = [None] * _WORLD.size
    with _guard("all_gather_object"):
        dist.all_gather_object(out, obj)
    return out


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's ``obj``, in rank order, on rank 0 (None elsewhere)."""
    return gather_to(obj, 0)


def gather_to(obj: Any, dst: int) -> list[Any] | None:
    """Every rank's ``obj``, in rank order, on rank ``dst`` (None elsewhere)."""
    if not _WORLD.active:
        return [obj]
    out: list[Any] | None = [None] * _WORLD.size if _WORLD.rank == dst else None
    with _guard("gather_object"):
        dist.gather_object(obj, out, dst=dst)
    return out


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not _WORLD.active:
        return obj
    box = [obj if _WORLD.main else None]
    with _guard("broadcast_object_list"):
        dist.broadcast_object_list(box, src=0)
    return box[0]


def wait_for_main() -> None:
    """Block until rank 0's process has ended (a collective that it never joins fails when its connections close),
    or until the process group's timeout."""
    if _WORLD.active and not _WORLD.main:
        with contextlib.suppress(PeerLost):
            broadcast(None)


def broadcast_parameters(modules: Iterable[th.nn.Module]) -> None:
    """Every rank gets rank 0's parameters and buffers (one flattened broadcast)."""
    if not _WORLD.active:
        return
    tensors = [t for m in modules for t in (*m.parameters(), *m.buffers())]
    flat = th.cat([t.detach().reshape(-1).double() for t in tensors])
    with _guard("broadcast"):
        dist.broadcast(flat, src=0)
    offset = 0
    with th.no_grad():
        for t in tensors:
            t.copy_(flat[offset:offset + t.numel()].view_as(t).to(t.dtype))
            offset += t.numel()


def send_training_state(model) -> None:
    """This process trained ``model`` (an SB3 PPO) alone: every other process gets its weights, optimizer state
    and update counter (``receive_training_state``), bit for bit."""
    box = [sb3_adapter.export_result(model)]
    with _guard("broadcast_object_list"):
        dist.broadcast_object_list(box, src=_WORLD.rank)


def receive_training_state(model, src: int) -> None:
    box = [None]
    with _guard("broadcast_object_list"):
        dist.broadcast_object_list(box, src=src)
    sb3_adapter.import_result(model, box[0])


class GradientMean:
    """Averages a module's gradients over ranks after every backward pass, before SB3 clips and steps them.

    Rank r's gradient, computed on its share of a minibatch, is weighted by ``weight`` (its number of joint task
    groups in this update, 0 when it has no data and only keeps the collectives company); the mean is
    sum_r weight_r * grad_r / sum_r weight_r. Hooks fire as each parameter's gradient is accumulated; the last one
    all-reduces every gradient at once (one flattened tensor), so clipping sees the mean gradient, as in one
    process. The optimizer's pre-step hook checks that it happened."""

    def __init__(self, module: th.nn.Module, name: str):
        self.name = name
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.weight: float | None = None  # None: off (one process, or no update under way)
        self._seen = 0
        for p in self.params:
            p.register_post_accumulate_grad_hook(self._on_grad)

    def _on_grad(self, param: th.Tensor) -> None:
        if self.weight is None:
            return
        self._seen += 1
        if self._seen == len(self.params):
            self._seen = 0
            self._reduce()

    def _reduce(self) -> None:
        grads = [p.grad for p in self.params]
        flat = th.cat([g.reshape(-1) for g in grads])
        flat.mul_(self.weight)
        joined = th.cat([flat, th.tensor([self.weight], dtype=flat.dtype)])
        with _guard(f"the gradient all-reduce of {self.name}"):
            dist.all_reduce(joined)
        flat, total = joined[:-1], float(joined[-1])
        flat.div_(total)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g).to(g.dtype))
            offset += g.numel()

    def pre_step(self, optimizer, args, kwargs) -> None:
        if self.weight is not None and self._seen:
            raise RuntimeError(f"{self.name}: only {self._seen} of {len(self.params)} parameters got a gradient "
                               f"before the optimizer step; the cross-process mean needs all of them")


def tensor_digests(named: Iterable[tuple[str, th.Tensor]]) -> list[tuple[str, str]]:
    return [(name, hashlib.sha1(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()) for name, t in named]


def check_identical(modules: dict[str, th.nn.Module]) -> None:
    """Raise on every rank when any rank's parameters (or buffers) of ``modules`` differ from rank 0's, naming the
    first rank and tensor."""
    if not _WORLD.active:
        return
    mine = {owner: tensor_digests(module.state_dict().items()) for owner, module in modules.items()}
    everyone = gather(mine)
    for rank, theirs in enumerate(everyone[1:], start=1):
        for owner, digests in everyone[0].items():
            for (name, want), (_, got) in zip(digests, theirs[owner], strict=True):
                if want != got:
                    raise RuntimeError(f"rank {rank}'s {owner} parameter {name!r} differs from rank 0's: the "
                                       f"processes of the run have drifted apart (parameters must stay identical)")


def sync_obs_stats(rms) -> None:
    """Merge the observation statistics every rank gathered since the last merge (``TrackedRMS.fresh``) into the
    statistics of the last merge, the same on every rank (parallel mean/variance combination, in rank order)."""
    if rms is None or not _WORLD.active:
        return
    fresh = gather((rms.fresh.mean, rms.fresh.var, rms.fresh.count))
    rms.merge(fresh)
