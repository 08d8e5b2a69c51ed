"""``served``: a model served behind an OpenAI-compatible API (vLLM's ``vllm serve``, SGLang, TGI, llama.cpp's
server, Ollama, OpenAI itself), evaluated as it is served: no weights here, no tokenizer, no fine-tune.

``base_model`` is the name the server serves the model under (what ``GET /v1/models`` lists);
``base_url`` the API root (``http://127.0.0.1:8000/v1``); ``api_key_env`` the *name* of the environment
variable holding the key (the key itself is read when a request is sent and never stored or logged).
Generate with ``[engine] name = "openai"``. With ``template = "chat"`` the server applies the model's chat
template (the engine sends the conversation); with ``template = "alpaca"`` it completes the rendered prompt.

The identity in cache keys is the endpoint and the served name: the weights behind them are the server's
business, so a server that swaps the model under the same name needs a new name (or ``revision``, any label
you choose) to be re-run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import hookimpl
from harness.api import LoadedModel, ModelAdapter, ModelSpec, Option, Progress, TrainPair
from harness.errors import UserError


class ServedModel(ModelAdapter):
    name = "served"
    version = "1"
    description = "a model behind an OpenAI-compatible server (use with [engine] name = 'openai'); no fine-tune"
    options = {
        "base_url": Option(str, help="the server's OpenAI-compatible API root, e.g. http://127.0.0.1:8000/v1"),
        "api_key_env": Option(str, default=None, nullable=True, help="NAME of the environment variable holding the API key (never the key itself)"),
        "revision": Option(str, default="", help="any label of what the server serves under this name (part of the identity: change it to re-run)"),
    }

    def identity(self, spec: ModelSpec) -> dict[str, Any]:
        ident: dict[str, Any] = {"endpoint": endpoint(spec.options["base_url"]), "served_model": spec.base_model}
        if spec.options.get("revision"):
            ident["revision"] = spec.options["revision"]
        return ident

    def tokenizer(self, spec: ModelSpec) -> Any:
        return None  # the server applies the chat template

    def train(self, spec: ModelSpec, pairs: Sequence[TrainPair], out_dir: Path, progress: Progress) -> dict[str, Any]:
        raise UserError(
            f"model '{spec.name}' is served behind an API (adapter = 'served'): it cannot be fine-tuned here; set finetune = false",
            key=f"models.{spec.name}.finetune",
        )

    def load(self, spec: ModelSpec, adapter_dir: Path | None) -> LoadedModel:
        raise UserError(
            f"model '{spec.name}' is served behind an API (adapter = 'served'): it has no weights here; use [engine] name = 'openai'",
            key="engine.name",
        )


def endpoint(base_url: str) -> str:
    """The API root as written, without a trailing slash (what identities record)."""
    return base_url.strip().rstrip("/")


@hookimpl
def harness_register_models(register):
    register(ServedModel)
