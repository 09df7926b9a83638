"""Project folders (data/, mlruns/) and safe path handling for the dashboard's file pickers."""

from __future__ import annotations

import os
from pathlib import Path

from genesis.errors import GenesisError

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def home() -> Path:
    """Project home: $GENESIS_HOME (tests, lab installs) or the repository folder."""
    return Path(os.environ.get("GENESIS_HOME", PACKAGE_ROOT)).resolve()


def data_dir() -> Path:
    path = home() / "data"
    path.mkdir(parents=True, exist_ok=True)
    return path


def mlruns_dir() -> Path:
    path = home() / "mlruns"
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_data_path(path: str | Path) -> Path:
    """A config's relative data path: from the current folder when the file is there, else from the
    project home (the dashboard and launched trainers work relative to home, wherever they started)."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return candidate.resolve()
    return (home() / candidate).resolve()


def inside(path: str | Path, *roots: Path) -> Path:
    """Resolve `path` (relative to home) and refuse it unless it lies inside one of `roots`."""
    roots = roots or (data_dir(), mlruns_dir())
    candidate = Path(path)
    resolved = (candidate if candidate.is_absolute() else home() / candidate).resolve()
    for root in roots:
        if resolved == root.resolve() or root.resolve() in resolved.parents:
            return resolved
    allowed = ", ".join(str(r) for r in roots)
    raise GenesisError(f"path {path} is outside the project folders ({allowed}); pick a file there")


def list_files(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Files under root with one of the suffixes, newest first."""
    files = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith(".")]
    return sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)
