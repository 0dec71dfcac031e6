"""Checkpoints that survive crashes and preemption, and resuming a run in its own output dir.

- `load_checkpoint`: `torch.load(weights_only=True)` with one-line errors for missing, truncated,
  foreign and unsafe files. A file whose pickle would run code is refused, never executed.
- `AtomicCheckpointIO`: writes `<name>.tmp` next to the target, fsyncs it and renames it over the
  target, so a kill during a save leaves the previous file intact. (Lightning's own save goes
  through an fsspec transaction whose temp file lives in /tmp and is *moved* into place: a copy,
  not an atomic rename, whenever /tmp is another filesystem, and never fsynced.)
- `RunCheckpoint`: best.ckpt (lowest val/nll, as Lightning's ModelCheckpoint) plus last.ckpt, the
  full training state, written every `every_n_train_steps` steps, after every validation, at the
  end of training, and when the job is told to stop (SIGTERM, or the scheduler's preemption
  signal), after which it exits cleanly.
- Resuming (`prepare_resume`): `resume=<run dir>` and `ckpt_path=last` make Hydra reuse the old
  run dir (the `autoreg_run_dir` / `autoreg_config_subdir` resolvers of conf/train.yaml; the old
  `.hydra/` record stays), the checkpoint is checked before anything starts (safe load, training
  state present, same model/data/optim/seed), and what the killed run logged after its last
  checkpoint is dropped from its event files, so TensorBoard curves continue without a gap or a
  duplicate.
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from autoreg import pretrained
from autoreg.compat import ResumableModelCheckpoint, checkpoint_logged_step, request_stop
from autoreg.errors import CheckpointError, ConfigError, OutputError, first_line
from autoreg.families import current_config
from autoreg.run_dirs import LAST, run_dir_checkpoint

log = logging.getLogger(__name__)

TRAINING_STATE_KEYS = ("state_dict", "hyper_parameters", "optimizer_states", "loops", "global_step", "epoch")


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", key: str = "ckpt", training_state: bool = False) -> dict[str, Any]:
    """An autoreg checkpoint (or a shipped model, by name: autoreg.pretrained) as a dict, loaded with
    `weights_only=True`. `key` names the config key that pointed at it (for the message);
    `training_state` also requires what resuming needs."""
    path = pretrained.resolve(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        head = b""  # missing or a directory: torch.load says which below
    if head and not head.startswith((b"PK\x03\x04", b"\x80")):  # neither a zip (torch.save) nor a pickle
        raise CheckpointError(f"{key}={path} is not a checkpoint at all (it starts with {head!r}, not as a PyTorch file does); "
                              "pass a .ckpt file written by autoreg (e.g. <run dir>/checkpoints/best.ckpt)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        shipped = ", ".join(pretrained.manifest()) or "none"
        raise CheckpointError(f"{key}={path} does not exist; pass the path of a .ckpt file (e.g. <run dir>/checkpoints/last.ckpt) "
                              f"or the name of a shipped model ({shipped})") from None
    except IsADirectoryError:
        raise CheckpointError(f"{key}={path} is a directory; pass a .ckpt file inside it (e.g. checkpoints/last.ckpt)") from None
    except Exception as err:  # truncated zip, random bytes, refused pickle: torch raises many types
        message = str(err)
        if "weights_only" in message or "Unsupported global" in message or "Unsupported operand" in message:
            found = re.search(r"GLOBAL (\S+)", message)
            what = f" ({found.group(1)})" if found else ""
            raise CheckpointError(
                f"{key}={path} holds pickled objects that could run code{what}; refused (loaded with weights_only=True). "
                "Use only checkpoints written by autoreg"
            ) from None
        raise CheckpointError(f"{key}={path} cannot be loaded: it is truncated or not a PyTorch checkpoint ({first_line(err)})") from None
    if isinstance(ckpt, dict) and ckpt.get("autoreg_format", pretrained.FORMAT) != pretrained.FORMAT:
        raise CheckpointError(f"{key}={path} is a shipped model of format {ckpt['autoreg_format']!r}, and this autoreg reads format "
                              f"{pretrained.FORMAT}; use the autoreg release it came with, or export it again")
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise CheckpointError(f"{key}={path} is not an autoreg training checkpoint (no state_dict/hyper_parameters): a bare weights file or another program's")
    if training_state and any(k not in ckpt for k in TRAINING_STATE_KEYS):
        missing = [k for k in TRAINING_STATE_KEYS if k not in ckpt]
        raise CheckpointError(f"{key}={path} holds weights only, not the training state needed to resume (missing {', '.join(missing)}); start a new run")
    return ckpt


class AtomicCheckpointIO(TorchCheckpointIO):
    """Local checkpoints are written to a temp file in the same directory, fsynced, then renamed
    over the target (os.replace is atomic on POSIX); remote URLs go through Lightning's fsspec path."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options for local paths")
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)  # make the rename itself durable
            finally:
                os.close(fd)
        except OSError as err:
            if tmp.parent.is_dir():
                tmp.unlink(missing_ok=True)
            raise OutputError(
                f"cannot write checkpoint {path}: {err.strerror or err}; free disk space or fix the permissions of {path.parent}"
            ) from err


class RunCheckpoint(ResumableModelCheckpoint):
    """best.ckpt exactly as ModelCheckpoint(monitor=...) writes it, and last.ckpt, the full
    training state (weights, optimizer, scheduler, loops, data position, RNG), written:
    every `every_n_train_steps` optimizer steps (0: never), after every validation, at the end of
    training, and at the first training batch end after a stop signal: SIGTERM, or
    `preempt_signal` (SIGUSR2: what SLURM sends through submitit ahead of a time limit or a
    preemption). Training then stops cleanly (Lightning's SIGTERM exit); for `preempt_signal` the
    handler that was there before (submitit's requeue) runs after the save, so the job is requeued
    and resumes from it (autoreg.cli.stop_after_signal).

    Signals only raise a flag; the save happens at a batch end that every DDP process reaches, and
    all processes agree on it there. NOTE: this replaces Lightning's SIGTERM handler during
    training: Lightning 2.6's broadcasts from inside the handler and deadlocks gloo/NCCL when the
    other process is already in a collective.
    """

    def __init__(self, every_n_train_steps: int = 200, preempt_signal: str | None = "SIGUSR2", **kwargs: Any):
        kwargs["save_last"] = False  # last.ckpt is written here, on the schedule above
        super().__init__(**kwargs)
        self.last_every_n_train_steps = every_n_train_steps
        self.stop_signals = [signal.SIGTERM] + ([getattr(signal, preempt_signal)] if preempt_signal else [])
        self.stopped_by: str | None = None  # the signal that stopped training, if one did
        self._last_saved_step = -1
        self._received: int | None = None
        self._prior_handlers: dict[int, Any] = {}

    @property
    def last_path(self) -> str:
        return os.path.join(str(self.dirpath), LAST)

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit" and trainer.is_global_zero and self.dirpath and os.path.isdir(self.dirpath):
            for stale in Path(self.dirpath).glob(".*.ckpt.*.tmp"):  # from a save that was killed
                stale.unlink(missing_ok=True)

    def on_train_start(self, trainer, pl_module) -> None:
        """Lightning has registered its handlers by now, and restores what it found (the ones
        from before fit) when fit ends; ours stand in between."""
        try:
            self._prior_handlers = {sig: signal.signal(sig, self._on_stop_signal) for sig in self.stop_signals}
        except ValueError:  # not the main thread: leave signals to Lightning
            self._prior_handlers = {}

    def _on_stop_signal(self, signum, frame) -> None:
        log.warning("received %s: saving %s at the end of this batch, then stopping", signal.Signals(signum).name, LAST)
        self._received = self._received or signum

    def write_last(self, trainer) -> None:
        self.last_model_path = self.last_path
        trainer.save_checkpoint(self.last_path, weights_only=False)
        self._last_saved_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        stop = self._received is not None or trainer.received_sigterm
        if trainer.world_size > 1:  # all processes save and stop together, or DDP hangs
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        every = self.last_every_n_train_steps
        if stop or (every > 0 and trainer.global_step % every == 0 and trainer.global_step != self._last_saved_step):
            self.write_last(trainer)
        if stop:
            self.stopped_by = signal.Signals(self._received or signal.SIGTERM).name
            log.warning("%s: saved %s at step %d; stopping", self.stopped_by, self.last_path, trainer.global_step)
            request_stop(trainer)  # Lightning then stops cleanly after this batch is logged

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_skip_last(trainer):
            self.write_last(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self.saves_on_train_epoch_end(trainer) and not self._should_skip_last(trainer):
            self.write_last(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        if not self._should_skip_last(trainer) and trainer.global_step != self._last_saved_step:
            self.write_last(trainer)

    def _should_skip_last(self, trainer) -> bool:
        from pytorch_lightning.trainer.states import TrainerFn

        return bool(trainer.fast_dev_run) or trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking

    def hand_over_stop(self) -> None:
        """After fit() stopped for the preemption signal: run the handler that was there before
        (submitit's: requeue the job, then exit). SIGTERM has no such hand-over."""
        if self._received is not None and self._received != signal.SIGTERM:
            prior = self._prior_handlers.get(self._received)
            if callable(prior):
                prior(self._received, None)


# What a resumed run must share with the run it continues (data.root/source may move machines).
RUN_IDENTITY = ("model", "optim", "data.dataset", "data.bits", "data.binarize", "data.val_size", "data.batch_size")
RUN_IDENTITY_EXEMPT = ("compile",)  # model keys that change how, not what, it computes


def resume_checkpoint(cfg: DictConfig, output_dir: Path) -> tuple[Path | None, str]:
    """The checkpoint to resume from (None: a fresh run) and the config key that named it."""
    if cfg.get("resume") not in (None, ""):
        if cfg.get("ckpt_path") is not None:
            raise ConfigError(f"resume={cfg.resume} and ckpt_path={cfg.ckpt_path} both say where to resume from; pass one")
        return run_dir_checkpoint(cfg.resume), "resume"
    if cfg.get("ckpt_path") in (None, ""):
        return None, "ckpt_path"
    if cfg.ckpt_path == "last":
        dirpath = OmegaConf.select(cfg, "callbacks.checkpoint.dirpath", default=None) or output_dir / "checkpoints"
        path = Path(dirpath) / LAST
        if not path.is_file():
            log.warning("ckpt_path=last: no %s in %s yet; starting from scratch", LAST, path.parent)
            return None, "ckpt_path"
        return path, "ckpt_path"
    return Path(cfg.ckpt_path), "ckpt_path"


def check_same_run(cfg: DictConfig, ckpt: dict[str, Any], path: Path, key: str) -> None:
    """A resumed run must be the run in the checkpoint: one line naming every difference."""
    hparams = ckpt["hyper_parameters"]
    diffs = []
    for name in RUN_IDENTITY:
        group, _, field = name.partition(".")
        old, new = hparams.get(group) or {}, OmegaConf.to_container(cfg[group], resolve=True)
        if group == "model" and old:  # as an older release wrote it, if it did
            old = current_config(old, hparams.get("bits", cfg.data.bits))
        for f in [field] if field else sorted(set(old) | set(new)):
            if f in old and f not in RUN_IDENTITY_EXEMPT and old[f] != new.get(f):  # keys the old run lacked are new options
                diffs.append(f"{group}.{f}={new.get(f)} (was {old[f]})")
    seed = (ckpt.get("ImageDataModule") or {}).get("seed")
    if seed is not None and seed != cfg.seed:
        diffs.append(f"seed={cfg.seed} (was {seed})")
    if diffs:
        raise ConfigError(
            f"{key}: this config is not the one of the run in {path}: {', '.join(diffs)}; "
            "pass the run's own overrides again (see its .hydra/overrides.yaml), or start a new run"
        )


def prepare_resume(cfg: DictConfig, output_dir: Path) -> tuple[Path | None, bool, int | None]:
    """(checkpoint to resume from or None, whether the run goes on in its own dir, its step).
    The checkpoint is checked (safe load, training state, same run) before anything starts; a
    run that goes on in its own dir first drops the events logged after the checkpoint."""
    ckpt_path, key = resume_checkpoint(cfg, output_dir)
    if ckpt_path is None:
        return None, False, None
    ckpt = load_checkpoint(ckpt_path, key=key, training_state=True)
    check_same_run(cfg, ckpt, ckpt_path, key)
    in_place = ckpt_path.resolve().parent.parent == output_dir.resolve()
    log.info("resuming from %s at epoch %d, step %d", ckpt_path, ckpt["epoch"], ckpt["global_step"])
    if in_place and rank_zero_only.rank == 0 and cfg.get("logger"):
        dropped = trim_events(output_dir, keep=logged_before(ckpt))
        log.info("dropped %d TensorBoard events logged after that checkpoint", dropped)
    return ckpt_path, in_place, ckpt["global_step"]


def logged_before(ckpt: dict[str, Any]) -> Callable[[Any], bool]:
    """Which TensorBoard events of a killed run to keep when resuming from `ckpt`: those at steps
    the resumed run will not log again (before `autoreg.compat.checkpoint_logged_step`)."""
    first = checkpoint_logged_step(ckpt)

    def keep(event) -> bool:
        tags = [value.tag for value in event.summary.value]
        return event.step < first or not tags or all(tag.startswith("_hparams_") for tag in tags)

    return keep


def trim_events(log_dir: str | os.PathLike, keep: Callable[[Any], bool]) -> int:
    """Rewrite the TensorBoard event files in `log_dir` without the events `keep(event)` rejects
    (atomically, file by file); return how many were dropped."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    dropped = 0
    for path in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        records = list(RawEventFileLoader(str(path)).Load())
        kept = [r for r in records if keep(event_pb2.Event.FromString(r))]
        if len(kept) == len(records):
            continue
        dropped += len(records) - len(kept)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            writer = RecordWriter(f)
            for record in kept:
                writer.write(record)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return dropped


def rng_state() -> dict[str, Any]:
    """The global RNG states, in types that `torch.load(weights_only=True)` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def export_pretrained(ckpt: dict[str, Any], name: str, record: dict[str, Any], directory: Path = pretrained.HERE) -> Path:
    """Write `ckpt`'s evaluated weights (fp32) and hparams as shipped model `name`, and its
    manifest entry (`record` plus the file, family, format and parameter count): autoreg.pretrained."""
    state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    path = Path(directory) / f"{name}.pt"
    AtomicCheckpointIO().save_checkpoint({"autoreg_format": pretrained.FORMAT, "state_dict": state,
                                          "hyper_parameters": ckpt["hyper_parameters"]}, path)
    hp = ckpt["hyper_parameters"]
    entries_file = Path(directory) / "manifest.json"
    entries = json.loads(entries_file.read_text()) if entries_file.is_file() else {}
    entries[name] = {"file": path.name, "format": pretrained.FORMAT, "family": hp["model"]["name"], "model": current_config(hp["model"], hp["bits"]),
                     "data": hp["data"]["name"], "params": int(sum(v.numel() for v in state.values())),
                     "bytes": path.stat().st_size, **record}
    entries_file.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
    return path
