"""Safe reader for legacy checkpoints (the original GENESIS trainer) that never imports or runs code.

Such files (a torch.save'd dict with model_state_dict and a pickled config object of a class that does not
exist here) are refused by torch.load(weights_only=True). `read_legacy` opens torch's zip archive
(<prefix>/data.pkl plus raw storages <prefix>/data/<key>) and unpickles data.pkl with `_SafeUnpickler`,
whose find_class never imports. Tensors become `TensorStub`s (values read from the raw storage bytes on
demand), OrderedDict a dict, numpy scalars/arrays are rebuilt from their bytes, and every other global
becomes a `Placeholder` that records its name, arguments and state. Calling a placeholder (pickle REDUCE)
only records the call, so a payload such as (os.system, ("...",)) never runs; files naming such globals
are refused with a CheckpointError.
"""

from __future__ import annotations

import functools
import io
import math
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genesis.errors import CheckpointError

MB = 2**20
MAX_PICKLE_BYTES = 256 * MB  # legacy data.pkl holds structure only (tensor data are separate entries)

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128, "UntypedStorage": torch.uint8,
}
_SAFE_BUILTINS = {"set": set, "frozenset": frozenset, "complex": complex, "slice": slice, "object": object}
SUSPICIOUS_MODULES = frozenset({
    "os", "posix", "nt", "subprocess", "sys", "shutil", "socket", "importlib", "runpy", "pickle", "_pickle",
    "marshal", "code", "codeop", "pty", "ctypes", "types", "webbrowser", "io", "_io", "pathlib", "tempfile",
    "multiprocessing", "threading", "signal", "asyncio", "operator", "functools", "timeit", "pdb", "bdb", "http",
    "urllib", "requests", "pip", "setuptools", "distutils", "commands", "platform", "glob", "builtins",
    "__builtin__", "_posixsubprocess", "zipimport", "sqlite3", "tarfile", "zipfile", "shlex",
})
SUSPICIOUS_NAMES = frozenset({
    "eval", "exec", "execfile", "compile", "__import__", "getattr", "setattr", "delattr", "open", "input",
    "breakpoint", "globals", "locals", "vars", "apply", "system", "popen", "spawn", "run", "call", "check_call",
    "check_output", "load", "loads", "remove", "unlink", "rmtree", "attrgetter", "methodcaller", "partial",
})


class Placeholder:
    """Stand-in for a global (class or function) named by a legacy file. Never runs anything: creating or
    calling it records the arguments; pickle's BUILD / SETITEMS / APPENDS record state, items and values."""

    pickle_global: str = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "Placeholder":
        obj = super().__new__(cls)
        obj.args, obj.kwargs, obj.state, obj.items, obj.values = args, kwargs, None, {}, []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.values.append(value)

    def extend(self, values: Any) -> None:
        self.values.extend(values)

    def __call__(self, *args: Any, **kwargs: Any) -> "Placeholder":
        return placeholder_class(f"{self.pickle_global}(...)")(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<{self.pickle_global}({', '.join(_short(a) for a in self.args)})>"


@functools.lru_cache(maxsize=1024)
def placeholder_class(name: str) -> type[Placeholder]:
    """The Placeholder subclass standing in for global `name` ('module.qualname')."""
    return type(name.rsplit(".", 1)[-1] or "Global", (Placeholder,), {"pickle_global": name})


class _Dict(dict):
    """collections.OrderedDict stand-in: a plain dict that ignores pickled instance state (_metadata)."""

    def __setstate__(self, state: Any) -> None:
        pass


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


@dataclass(frozen=True)
class _StorageRef:
    archive: Path
    entry: str
    dtype: torch.dtype
    numel: int
    big_endian: bool


@dataclass(eq=False)
class TensorStub:
    """A tensor of a legacy file: shape and dtype known, values read from the archive only on demand."""

    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self.size)

    @property
    def dtype(self) -> torch.dtype:
        return self.storage.dtype

    def numel(self) -> int:
        return math.prod(self.size)

    def materialize(self) -> torch.Tensor:
        """The tensor's values from the raw storage bytes (nothing is unpickled)."""
        s = self.storage
        if s.big_endian:
            raise CheckpointError(f"{s.archive}: big-endian storages are not supported by the safe reader")
        nbytes = s.numel * torch.empty((), dtype=s.dtype).element_size()
        try:
            with zipfile.ZipFile(s.archive) as z, z.open(s.entry) as f:
                raw = f.read(nbytes)
        except (KeyError, zipfile.BadZipFile, OSError) as exc:
            raise CheckpointError(f"{s.archive}: storage {s.entry} cannot be read ({exc})") from exc
        if len(raw) < nbytes:
            raise CheckpointError(f"{s.archive}: storage {s.entry} is truncated ({len(raw)} < {nbytes} bytes)")
        base = torch.frombuffer(bytearray(raw), dtype=s.dtype) if nbytes else torch.empty(0, dtype=s.dtype)
        try:
            return torch.as_strided(base, self.size, self.stride, self.offset).clone()
        except RuntimeError as exc:
            raise CheckpointError(f"{s.archive}: tensor record does not fit its storage ({exc})") from exc

    def tolist(self) -> Any:
        return self.materialize().tolist()

    def __setstate__(self, state: Any) -> None:
        pass


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_rest: Any) -> TensorStub:
    if not isinstance(storage, _StorageRef) or not all(isinstance(v, int) and v >= 0
                                                       for v in (offset, *size, *stride)):
        raise pickle.UnpicklingError("malformed tensor record")
    return TensorStub(storage, offset, tuple(size), tuple(stride))


def _rebuild_parameter(data: Any, *_rest: Any) -> Any:
    return data


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> Any:
    """Protocol-2 pickles store bytes as _codecs.encode(str, 'latin1'); only that is honoured."""
    if isinstance(text, str) and encoding in ("latin1", "latin-1"):
        return text.encode("latin1")
    return placeholder_class("_codecs.encode")(text, encoding)


class _NpDType:
    """numpy.dtype stand-in: only numeric dtypes are ever built (from their name, e.g. 'f8')."""

    def __init__(self, name: Any, *_flags: Any) -> None:
        self.name, self.byteorder = str(name), "="

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.byteorder = state[1]

    def numpy(self) -> np.dtype | None:
        try:
            dt = np.dtype(self.name)
        except TypeError:
            return None
        if dt.kind not in "biufc":
            return None
        return dt.newbyteorder(self.byteorder) if self.byteorder in ("<", ">") else dt


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    dt = dtype.numpy() if isinstance(dtype, _NpDType) else None
    if dt is not None and isinstance(data, bytes) and len(data) == dt.itemsize:
        return np.frombuffer(data, dt)[0].item()
    return placeholder_class("numpy.scalar")(dtype, data)


class _NpArray:
    """numpy ndarray stand-in: the array is rebuilt from its raw bytes when the dtype is numeric."""

    def __init__(self, *_args: Any) -> None:
        self.value: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[2], _NpDType)):
            return
        _, shape, dtype, fortran, raw = state
        dt = dtype.numpy()
        if dt is not None and isinstance(raw, bytes) and all(isinstance(s, int) for s in shape) \
                and math.prod(shape) * dt.itemsize == len(raw):
            self.value = np.frombuffer(raw, dt).reshape(shape, order="F" if fortran else "C")


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """copyreg._reconstructor stand-in (protocol < 2 objects): an empty placeholder of `cls`."""
    if isinstance(cls, type) and issubclass(cls, Placeholder):
        return cls()
    return placeholder_class("copyreg._reconstructor")(cls, base, state)


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): _Dict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): tuple,
    ("_codecs", "encode"): _codecs_encode,
    ("numpy", "dtype"): _NpDType,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("torch.storage", "UntypedStorage"): _StorageType(torch.uint8),
    **{(m, "scalar"): _np_scalar for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "_reconstruct"): _NpArray for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, k): v for k, v in _SAFE_BUILTINS.items() for m in ("builtins", "__builtin__")},
    **{(m, k): _StorageType(v) for k, v in _STORAGE_DTYPES.items() for m in ("torch", "torch.cuda")},
    **{("torch", str(d).removeprefix("torch.")): d for d in _STORAGE_DTYPES.values()},
}
_SAFE_NAMES = frozenset(f"{m}.{n}" for m, n in _SAFE_GLOBALS)


def is_suspicious(name: str) -> bool:
    """Whether global 'module.qualname' could run code if a real unpickler resolved it."""
    module, _, qualname = name.rpartition(".")
    return name not in _SAFE_NAMES and (module.split(".")[0] in SUSPICIOUS_MODULES or qualname in SUSPICIOUS_NAMES)


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler whose find_class never imports: safe stand-ins or Placeholders only."""

    def __init__(self, data: bytes, archive: Path, prefix: str, big_endian: bool) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.big_endian = archive, prefix, big_endian
        self.globals: dict[str, None] = {}  # ordered set of every global the file names

    def find_class(self, module: str, name: str) -> Any:
        self.globals.setdefault(f"{module}.{name}")
        safe = _SAFE_GLOBALS.get((module, name))
        return safe if safe is not None else placeholder_class(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)
                and isinstance(pid[2], str) and isinstance(pid[4], int)):
            raise pickle.UnpicklingError(f"unsupported persistent id {_short(pid)}")
        return _StorageRef(self.archive, f"{self.prefix}/data/{pid[2]}", pid[1].dtype, pid[4], self.big_endian)


@dataclass
class LegacyFile:
    """What `read_legacy` found: the unpickled object (with stand-ins) and the globals the file names."""

    obj: Any
    globals: list[str] = field(default_factory=list)

    @property
    def suspicious(self) -> list[str]:
        return [g for g in self.globals if is_suspicious(g)]


_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def check_archive(path: str | Path) -> Path:
    """Raise a clear CheckpointError unless `path` is an existing zip archive (torch.save's format)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if zipfile.is_zipfile(path):
        return path
    with open(path, "rb") as f:
        if f.read(len(_LEGACY_TORCH_MAGIC)) == _LEGACY_TORCH_MAGIC:
            raise CheckpointError(f"{path}: written in the pre-1.6 PyTorch format, which cannot be inspected "
                                  "safely; re-save it with a current PyTorch where its code is available")
    raise CheckpointError(f"{path}: not a PyTorch checkpoint (not a zip archive; {path.stat().st_size} bytes): "
                          "the file is corrupted, truncated or of another type")


def read_legacy(path: str | Path, refuse_code: bool = True) -> LegacyFile:
    """Unpickle a torch zip checkpoint without importing or calling anything from it (see module doc).

    refuse_code: raise CheckpointError when the file names globals that could run code (os.system, eval...).
    """
    path = check_archive(path)
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            pkl = next((n for n in names if n.endswith("/data.pkl") and n.count("/") == 1), None)
            if pkl is None:
                raise CheckpointError(f"{path}: zip archive without data.pkl: not a PyTorch checkpoint")
            prefix = pkl.removesuffix("/data.pkl")
            big = f"{prefix}/byteorder" in names and z.read(f"{prefix}/byteorder").strip() == b"big"
            if z.getinfo(pkl).file_size > MAX_PICKLE_BYTES:
                raise CheckpointError(f"{path}: data.pkl is larger than {MAX_PICKLE_BYTES // MB} MB; not inspected")
            data = z.read(pkl)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CheckpointError(f"{path}: damaged zip archive (truncated?): {exc}") from exc
    unpickler = _SafeUnpickler(data, path, prefix, big)
    try:
        obj = unpickler.load()
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError, KeyError, IndexError,
            RecursionError) as exc:
        raise CheckpointError(f"{path}: data.pkl cannot be read ({type(exc).__name__}: {exc})") from exc
    found = LegacyFile(obj, list(unpickler.globals))
    if refuse_code and found.suspicious:
        raise CheckpointError(
            f"{path}: refused: the file names {', '.join(found.suspicious)}, which would run code when unpickled "
            "(nothing from it was run). Do not open it with torch.load(weights_only=False).")
    return found


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def to_plain(obj: Any, depth: int = 0) -> Any:
    """JSON-friendly copy: dicts, lists, scalars; small tensors/arrays as lists, big ones as a summary;
    placeholders as {'__class__': name, **state} or 'name(args)'."""
    if depth > 20:
        return "..."
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, (bytes, bytearray)):
        return f"<{len(obj)} bytes>"
    if isinstance(obj, np.generic):
        return to_plain(obj.item(), depth)
    if isinstance(obj, dict):
        return {str(k): to_plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_plain(v, depth + 1) for v in obj]
    if isinstance(obj, (torch.Tensor, TensorStub)):
        if obj.numel() <= 16:
            return to_plain(obj.tolist(), depth + 1)
        return f"tensor(shape={list(obj.shape)}, dtype={str(obj.dtype).removeprefix('torch.')})"
    if isinstance(obj, _NpArray):
        if obj.value is None:
            return "array(unreadable)"
        return to_plain(obj.value.tolist(), depth) if obj.value.size <= 16 else f"array(shape={list(obj.value.shape)})"
    if isinstance(obj, Placeholder):
        state = obj.state[0] if isinstance(obj.state, tuple) and obj.state and isinstance(obj.state[0], dict) \
            else obj.state
        if isinstance(state, dict) or obj.items:
            return {"__class__": obj.pickle_global, **to_plain({**(state or {}), **obj.items}, depth + 1)}
        return f"{obj.pickle_global}({', '.join(_short(to_plain(a, depth + 1)) for a in obj.args)})"
    if isinstance(obj, type) and issubclass(obj, Placeholder):
        return obj.pickle_global
    return str(obj) if isinstance(obj, (torch.dtype, torch.device)) else _short(obj)
