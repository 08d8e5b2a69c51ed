"""Compile paid once: torch's on-disk compile caches kept between runs, one folder per (torch, device, model).

``torch.compile`` of the decoding step costs about 25–30 s per model and step shape on a GPU, more
than a small model's whole sweep decodes in. Inductor keeps what it compiled on disk (its FX graph
cache, AOTAutograd cache and the Triton kernels) under ``TORCHINDUCTOR_CACHE_DIR`` /
``TRITON_CACHE_DIR``; a later process that traces the same graph loads them instead of compiling.
:class:`CompileCache` points both at a folder of its own while the engine compiles, under
``$HARNESS_CACHE/compile`` (default ``~/.cache/harness/compile``), named by a hash of what a compiled
kernel depends on: the torch, CUDA and Triton versions, the GPU (name and compute capability), and
the model's architecture (its config, dtype and LoRA configuration — weights are inputs of the
compiled graph, not constants, so a fine-tuned twin of the same base shares the folder). A
different torch, GPU or model never reads another's kernels.

The folder also keeps ``times.json``: the seconds each step shape took to compile, per shape,
as measured. ``fast_decode.FastDecoder`` compiles a shape only where the steps ahead repay it
(half the measured step time saved per step, against the expected compile time: the last
recorded time for that shape, or :attr:`CompileCache.cold_seconds` when it never compiled here).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: expected seconds of a first compile of a step shape (measured 28-30 s on an H200, SmolLM2 and 7B shape alike)
COLD_SECONDS = 30.0


def cache_root() -> Path:
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness")) / "compile"


def model_key(model: Any) -> dict[str, Any]:
    """What a compiled step of ``model`` depends on besides torch and the device (not its weights)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config.to_dict()
    for volatile in ("_name_or_path", "transformers_version", "_commit_hash"):
        config.pop(volatile, None)
    peft = getattr(model, "peft_config", None)
    lora = {name: _jsonable(getattr(cfg, "to_dict", lambda: vars(cfg))()) for name, cfg in (peft or {}).items()}
    return {"class": type(base).__name__, "config": config, "dtype": str(next(model.parameters()).dtype), "lora": lora}


def device_key(device: Any) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": str(getattr(device, "type", device))}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if info["device"] == "cuda" and torch.cuda.is_available():
        index = getattr(device, "index", None) or 0
        info["gpu"] = torch.cuda.get_device_name(index)
        info["capability"] = list(torch.cuda.get_device_capability(index))
    return info


class CompileCache:
    """One folder of compile caches and compile times for one (torch, device, model)."""

    def __init__(self, folder: Path, key: dict[str, Any] | None = None, cold_seconds: float = COLD_SECONDS):
        self.folder = Path(folder)
        self.key = key or {}
        self.cold_seconds = cold_seconds

    @classmethod
    def for_model(cls, model: Any, root: Path | None = None) -> CompileCache:
        key = {"device": device_key(next(model.parameters()).device), "model": model_key(model)}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
        return cls((root or cache_root()) / digest, key)

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """While compiling: inductor's and Triton's caches in this folder (the process's own settings restored after)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "key.json").write_text(json.dumps(self.key, indent=1, sort_keys=True, default=str))
        saved = {name: os.environ.get(name) for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(self.folder / "inductor")
        os.environ["TRITON_CACHE_DIR"] = str(self.folder / "triton")
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def _times(self) -> dict[str, list[float]]:
        try:
            return json.loads((self.folder / "times.json").read_text())
        except (OSError, ValueError):
            return {}

    def expected_seconds(self, shape: Any) -> float | None:
        """The last measured compile time of ``shape`` here (None: never compiled with this folder)."""
        times = self._times().get(_shape(shape))
        return times[-1] if times else None

    def record(self, shape: Any, seconds: float) -> None:
        times = self._times()
        times.setdefault(_shape(shape), []).append(round(float(seconds), 3))
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".times-{os.getpid()}.json"
        tmp.write_text(json.dumps(times, indent=1, sort_keys=True))
        os.replace(tmp, self.folder / "times.json")


def _shape(shape: Any) -> str:
    return "x".join(str(int(n)) for n in shape)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
