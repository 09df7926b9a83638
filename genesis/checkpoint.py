"""Self-describing checkpoints: plain Python types and tensors, readable with weights_only=True.

Keys: format, format_version, kind, config (nested dict), model, ema, optimizer, scheduler, step,
epoch, best_val_loss, normalization, geometry (positions/string/dom), data, versions, mlflow, created.
A distilled student (genesis.distill) also has `distillation` (teacher_path, teacher_run_id, teacher_step,
student_steps: the DDIM steps it samples with, as its config's diffusion.sampling_steps; round, rounds, grid) and
`distill_teacher` (the weights of its round's teacher, for an exact resume).
Writes go to a temporary file and then os.replace, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import os
import pickle
import platform
import re
import shutil
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from genesis import __version__, config
from genesis.data.normalization import Normalization
from genesis.errors import CheckpointError, ConfigError, GenesisError
from genesis.geometry import Geometry

FORMAT = "genesis-checkpoint"
FORMAT_VERSION = 1


def versions() -> dict[str, str]:
    return {"genesis": __version__, "torch": str(torch.__version__), "python": platform.python_version()}


def geometry_to_dict(geo: Geometry) -> dict[str, Any]:
    return {"positions": torch.from_numpy(geo.positions.copy()), "string": torch.from_numpy(geo.string.copy()),
            "dom": torch.from_numpy(geo.dom.copy()), "name": geo.name}


def geometry_from_dict(d: dict[str, Any]) -> Geometry:
    return Geometry(d["positions"].numpy(), d["string"].numpy(), d["dom"].numpy(), d.get("name", "checkpoint"))


def save(state: dict[str, Any], path: str | Path) -> Path:
    """Write atomically: temporary file in the same folder, fsync, then os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write checkpoint {path}: {exc}") from exc
    return path


def make_state(cfg: config.RunConfig, model: torch.nn.Module, ema: torch.nn.Module | None, geometry: Geometry,
               step: int, epoch: int, best_val_loss: float, optimizer=None, scheduler=None,
               data: dict | None = None, mlflow: dict | None = None, extra: dict | None = None) -> dict[str, Any]:
    """The checkpoint dictionary (see module docstring)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": cfg.kind,
        "config": config.to_dict(cfg),
        "n_doms": geometry.n_doms,
        "model": model.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "step": int(step),
        "epoch": int(epoch),
        "best_val_loss": float(best_val_loss),
        "normalization": model.get_normalization_params(),
        "geometry": geometry_to_dict(geometry),
        "data": data or {},
        "versions": versions(),
        "mlflow": mlflow or {},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read any checkpoint file safely (weights_only=True). Files that need code are refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (not a zip archive: corrupted, truncated or another format)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = next((ln.strip() for ln in str(exc).splitlines() if "Unsupported global" in ln), "")
        reason = reason.split(" was not an allowed global")[0]
        raise CheckpointError(
            f"{path}: refused: loading it would need to run code from the file ({reason or 'not plain data'}). "
            "Only checkpoints of plain tensors and Python types are loaded; "
            "`python -m genesis inspect --checkpoint` shows what a legacy file holds without running it."
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (corrupted or truncated?): {exc}") from exc


def load_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check that this is a GENESIS checkpoint."""
    state = load(path, map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a GENESIS checkpoint (no format '{FORMAT}'); "
                              "legacy files can be inspected with `python -m genesis inspect`")
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer GENESIS (format {state['format_version']}); upgrade")
    return state


def build_model(cfg: config.RunConfig, n_doms: int, norm: Normalization) -> torch.nn.Module:
    """A fresh model of the configured kind; ConfigError when its weights cannot be allocated."""
    try:
        if cfg.kind == "diffusion":
            from genesis.models.dit import PMTDiT

            return PMTDiT(cfg.model, n_doms, norm)
        from genesis.models.flow import ConditionalFlow

        return ConditionalFlow(cfg.flow, n_doms, norm)
    except (MemoryError, RuntimeError) as exc:
        if not isinstance(exc, MemoryError) and "allocate" not in str(exc):
            raise
        section = "model" if cfg.kind == "diffusion" else "flow"
        need = re.search(r"allocate (\d+) bytes", str(exc))
        detail = f"one weight alone needs {int(need[1]) / 2**30:,.0f} GiB" if need else str(exc).splitlines()[0][:200]
        raise ConfigError(f"the {cfg.kind} model of this config does not fit in memory ({detail}); "
                          f"reduce {section}.hidden_size or {section}.depth") from exc


class LoadedModel:
    """A model rebuilt from a checkpoint, with everything needed to sample in physical units."""

    def __init__(self, path: str | Path, state: dict[str, Any], model: torch.nn.Module) -> None:
        self.path, self.state, self.model = Path(path), state, model
        self.config = config.from_dict(config.RunConfig, state["config"])
        self.kind: str = state["kind"]
        self.geometry = geometry_from_dict(state["geometry"])
        self.normalization = Normalization.from_dict(state["normalization"])

    @property
    def run_id(self) -> str | None:
        return (self.state.get("mlflow") or {}).get("run_id")

    def compiled_model(self) -> torch.nn.Module:
        """self.model through torch.compile (inductor), wrapped on first use and kept with this object (the
        compiled code lives with the wrapper: a process or a page compiles once). Raises GenesisError on a CPU
        without a C++ compiler, which inductor needs."""
        if getattr(self, "_compiled", (None,))[0] is not self.model:  # none yet, or the model was replaced
            if next(self.model.parameters()).device.type == "cpu" and cxx_compiler() is None:
                raise GenesisError("compiling the network on a CPU needs a C++ compiler (g++) and none is on the "
                                   "PATH: install one (apt-get install g++) or sample without compiling")
            self._compiled = (self.model, torch.compile(self.model, dynamic=False))
        return self._compiled[1]

    @property
    def distillation(self) -> dict[str, Any] | None:
        """The record of a distilled student's teacher (None for other checkpoints)."""
        record = self.state.get("distillation")
        return record if isinstance(record, dict) else None


def cxx_compiler() -> str | None:
    """The C++ compiler torch.compile would use on a CPU ($CXX, else g++, c++ or clang++ on the PATH), or None."""
    names = (os.environ.get("CXX", "g++"), "c++", "clang++")
    return next((found for name in names if (found := shutil.which(name))), None)


def load_model(path: str | Path, use_ema: bool = True, device: str | torch.device = "cpu",
               expect_kind: str | None = None) -> LoadedModel:
    """Rebuild the model from the embedded config (EMA weights by default), in eval mode on `device`."""
    state = load_state(path)
    if expect_kind and state["kind"] != expect_kind:
        raise CheckpointError(f"{path}: this is a {state['kind']} checkpoint; a {expect_kind} checkpoint is needed here")
    try:
        cfg = config.from_dict(config.RunConfig, state["config"])
        norm = Normalization.from_dict(state["normalization"])
        model = build_model(cfg, int(state["n_doms"]), norm)
        weights = state["ema"] if use_ema and state.get("ema") is not None else state["model"]
        model.load_state_dict(weights)
    except (KeyError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{path}: checkpoint does not match its own config ({exc})") from exc
    model.to(device).eval()
    return LoadedModel(path, state, model)


def resolve_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """'auto', 'cpu', 'cuda' or 'cuda:N' as a torch.device; under torchrun a plain 'cuda' (or 'auto' on a
    GPU machine) means this process's GPU, `local_rank`."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CheckpointError("device 'cuda' requested but no CUDA GPU is available; use --device cpu "
                              "(train.device=cpu for training)")
    if name == "cuda" and local_rank is not None:
        return torch.device("cuda", local_rank)
    try:
        return torch.device(name)
    except RuntimeError:
        raise CheckpointError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
