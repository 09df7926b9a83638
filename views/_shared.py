"""Streamlit glue shared by the pages: cached loaders keyed on plain strings, error display.

The genesis package never imports streamlit; everything here is a thin wrapper around it.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import streamlit as st

from genesis import paths, tracking
from genesis.errors import GenesisError

MAX_UPLOAD_MB = 200


@contextmanager
def user_errors():
    """Show GenesisError (bad input, unreachable store) as a clear message instead of a traceback."""
    try:
        yield
    except GenesisError as exc:
        st.error(str(exc), icon=":material/error:")
        st.stop()


@contextmanager
def errors_shown(prefix: str = ""):
    """Like user_errors, but the page goes on: for a rejected upload the rest of the page (the dataset picker
    and its views) must stay. Code after the failing line inside the block is skipped."""
    try:
        yield
    except GenesisError as exc:
        st.error(f"{prefix}{exc}", icon=":material/error:")


def store() -> tracking.Store:
    with user_errors():
        return tracking.Store.default()


@st.cache_resource(show_spinner=False)
def _store_ready(uri: str) -> bool:
    from genesis import mlflow_ui

    # creates the experiment, tagged so that `mlflow ui` opens it in the model-training view (not GenAI)
    mlflow_ui.mark_model_training(tracking.Store.default(), tracking.DEFAULT_EXPERIMENT)
    return True


def ready_store() -> tracking.Store:
    """The default store with its database and experiment created (once per process)."""
    s = store()
    with user_errors():
        try:
            _store_ready(s.tracking_uri)
        except Exception as exc:  # MLflow raises many types for a locked or unreachable store
            raise tracking.StoreError(f"MLflow store {s.tracking_uri} is not reachable: {exc}") from exc
    return s


def data_files(generated: bool = True) -> list[Path]:
    """HDF5 files in data/, newest first, generated samples (data/generated/) after the datasets (or left
    out with generated=False)."""
    files = paths.list_files(paths.data_dir(), (".h5", ".hdf5"))
    folder = paths.data_dir() / "generated"
    files = sorted(files, key=lambda p: folder in p.parents)  # stable: keeps newest-first within each group
    return files if generated else [p for p in files if folder not in p.parents]


def rel(path: Path) -> str:
    """A path as the user reads it: relative to the project home, or to the code (shipped demo models)."""
    for root in (paths.home(), paths.PACKAGE_ROOT):
        try:
            return str(Path(path).relative_to(root))
        except ValueError:
            continue
    return str(path)


@st.cache_data(show_spinner=False, max_entries=8)
def file_summary(path: str, mtime: float):
    from genesis.data import schema

    return schema.validate(path)


@st.cache_data(show_spinner=False, max_entries=32)
def read_event(path: str, mtime: float, index: int):
    from genesis.data import schema

    signal, labels, _ = schema.read_events(path, index, index + 1)
    return signal[0], labels[0]


@st.cache_data(show_spinner=False, max_entries=8)
def read_labels(path: str, mtime: float):
    import h5py
    import numpy as np

    with h5py.File(path, "r") as f:
        return np.asarray(f["label"][()], dtype=np.float32)


@st.cache_resource(show_spinner=False, max_entries=8)
def geometry_of(path: str, mtime: float):
    from genesis.data import schema

    return schema.read_geometry(path)


@st.cache_resource(show_spinner=False, max_entries=4)
def loaded_model(path: str, mtime: float, device: str = "cpu"):
    from genesis import checkpoint

    return checkpoint.load_model(path, device=device)


@st.cache_data(ttl=60, show_spinner=False)
def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@st.cache_data(ttl=60, show_spinner=False)
def cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def device_options() -> list[str]:
    return ["cpu"] + (["cuda"] if cuda_available() else [])


def mtime(path: str | Path) -> float:
    return Path(path).stat().st_mtime


def pick_data_file(label: str = "Dataset", key: str = "data_file", default: Path | None = None) -> Path | None:
    """A dataset picker; it starts on `default` (when given and listed) until the user picks another file."""
    files = data_files()
    if not files:
        st.info("No datasets in data/ yet. Create the demo dataset on the Home page or upload one on the Data page.")
        return None
    if default is not None and default in files and st.session_state.get(key) not in files:
        st.session_state[key] = default  # through the state, not index=: no "default and state" warning
    choice = st.selectbox(label, files, format_func=rel, key=key)
    with user_errors():
        return paths.inside(choice, paths.data_dir())


def save_upload(upload, folder: Path, suffixes: tuple[str, ...]) -> Path:
    """Write an uploaded file into folder under its (sanitised) name; refuses traversal and size overflow."""
    name = Path(upload.name).name
    if not name or name.startswith(".") or Path(name).suffix.lower() not in suffixes:
        raise GenesisError(f"upload '{upload.name}' must be a {' or '.join(suffixes)} file")
    if upload.size > MAX_UPLOAD_MB * 2**20:
        raise GenesisError(f"upload is {upload.size / 2**20:.0f} MB; the limit is {MAX_UPLOAD_MB} MB")
    target = paths.inside(folder / name, folder)
    if target.exists():
        raise GenesisError(f"{rel(target)} already exists; rename the file before uploading")
    return target


def pick_checkpoint(store: tracking.Store, first_kind: str, empty_hint: str, kinds: tuple[str, ...] | None = None,
                    key: str | None = None):
    """Checkpoint and device pickers -> (CheckpointInfo, device, loaded checkpoint).

    Lists only checkpoints of `kinds` (every kind when None), `first_kind` ones on top, and starts on the
    shipped demo model of `first_kind` until the user picks another (the pick is kept under `key`, by default
    one per set of kinds). Stops the page with `empty_hint` when there is none."""
    from genesis import sample_session as ss

    with user_errors():
        checkpoints = ss.checkpoint_choices(ss.list_checkpoints(store), kinds)
    checkpoints = sorted(checkpoints, key=lambda c: c.kind != first_kind)  # stable sort
    if not checkpoints:
        st.info(empty_hint)
        st.stop()
    by_path = {str(c.path): c for c in checkpoints}
    key = key or "checkpoint-" + ("-".join(kinds) if kinds else "any")
    if st.session_state.get(key) not in by_path:  # through the state, not index=: no "default and state" warning
        st.session_state[key] = str(ss.default_checkpoint(checkpoints, first_kind).path)
    left, right = st.columns([4, 1])
    ckpt = by_path[left.selectbox("Checkpoint", list(by_path), format_func=lambda p: by_path[p].label, key=key)]
    device = right.selectbox("Device", device_options())
    with user_errors():
        loaded = loaded_model(str(ckpt.path), mtime(ckpt.path), device)
    return ckpt, device, loaded
