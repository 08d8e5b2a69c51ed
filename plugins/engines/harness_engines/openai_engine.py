"""``openai``: generation by any server that speaks the OpenAI API (``vllm serve``, SGLang, TGI, llama.cpp's
server, Ollama, OpenAI itself).

Select it with ``[engine] name = "openai"`` for ``[[models]]`` of the ``served`` adapter (``base_model`` = the
served name, ``base_url``, ``api_key_env``), or as a judge's engine. Needs ``httpx`` (``pip install
'llm-decoding-harness[openai]'``).

* **Which endpoint.** A chat-template model's requests carry the conversation (``GenRequest.messages``) and go
  to ``/chat/completions``: the server applies the model's chat template. An Alpaca-template model's rendered
  prompt goes to ``/completions``. ``api = "chat"`` or ``"completions"`` forces one.
* **Decoding, as asked or refused.** Greedy is ``temperature = 0``; sampling sends ``temperature``, ``top_p``
  and the example's ``seed`` (servers that take a seed — vLLM, SGLang, OpenAI on a best-effort basis —
  reproduce a sample run to run). ``top_k``, ``min_p`` and ``repetition_penalty`` are not OpenAI parameters:
  vLLM's and SGLang's servers take them as extra body fields, OpenAI's does not. ``server_params = "auto"``
  finds out at ``check`` (``GET /models``: ``owned_by`` is ``vllm`` or ``sglang``), ``"vllm"`` says the server
  takes them, ``"none"`` that it does not. A config that needs what the server cannot do — beam search
  (no OpenAI-compatible API has it), or those parameters on a plain server — is refused at ``check`` and
  ``run`` (:meth:`OpenAIEngine.unsupported`), never sent without them. On a server that takes them every one
  is sent, neutral values too, so a model's ``generation_config.json`` cannot change the decoding behind the
  experiment's back. A conversation ending with an assistant turn (a judge priming its verdict) is continued
  where the server can (vLLM's ``continue_final_message``), refused where it cannot.
* **Log-probabilities.** ``GenRequest.logprobs`` > 0 asks for the top ``logprobs`` (at most 20) per generated
  token (chat: ``logprobs``/``top_logprobs``; completions: ``logprobs``). A server that answers without them
  leaves ``GenResult.logprobs`` None.
* **Concurrency, retries, timeouts.** ``concurrency`` requests in flight; results are yielded in batches of
  ``batch_size`` in the order they finish. 429 and 5xx answers, timeouts, broken connections and malformed
  JSON are retried with backoff (``Retry-After`` honoured; :mod:`openai_client`); other 4xx fail at once.
* **Preflight.** ``check`` reaches the server (``GET /models``) and says, in one message, whether it is
  unreachable, refused the key, or does not serve the model (listing what it serves).
* **The key.** ``api_key_env`` names an environment variable; the key is read per request and appears in no
  store, log, report or message.
* **Caching.** Like every generation: the key holds the model's identity (endpoint and served name), the
  prompt, the decoding and this engine's identity — never the key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from harness import hookimpl
from harness.api import Decoding, Engine, GenRequest, GenResult, ModelAdapter, ModelSpec, Option, Progress, TokenLogprob
from harness.errors import UserError

from .openai_client import ApiError, Client

APIS = ("auto", "chat", "completions")
SERVER_PARAMS = ("auto", "vllm", "none")
#: ``owned_by`` values of ``GET /models`` whose servers take top_k, min_p, repetition_penalty and continue_final_message
EXTENDED_SERVERS = ("vllm", "sglang")
#: the most top log-probabilities the OpenAI API returns per token
MAX_TOP_LOGPROBS = 20


class OpenAIEngine(Engine):
    name = "openai"
    version = "1"
    description = "any OpenAI-compatible server (vllm serve, SGLang, TGI, llama.cpp, Ollama, OpenAI): served models and judges"
    options = {
        "api": Option(str, default="auto", choices=APIS, help="auto: chat/completions for chat-template models, completions otherwise"),
        "server_params": Option(
            str, default="auto", choices=SERVER_PARAMS,
            help="does the server take top_k, min_p, repetition_penalty (vLLM/SGLang extra fields)? auto: ask it at check",
        ),
        "concurrency": Option(int, default=8, minimum=1, maximum=256, help="requests in flight at once"),
        "batch_size": Option(int, default=32, minimum=1, help="results per yielded (stored) batch"),
        "timeout": Option(float, default=120.0, minimum=0.1, help="seconds to wait for an answer before retrying"),
        "max_retries": Option(int, default=5, minimum=0, help="retries of a request after 429, 5xx, a timeout, a broken connection or malformed JSON"),
        "backoff": Option(float, default=1.0, minimum=0.0, help="first wait between retries (doubled each time, with jitter)"),
        "max_backoff": Option(float, default=60.0, minimum=0.0, help="longest wait between retries (Retry-After is honoured up to 600 s)"),
    }

    def __init__(self, settings: dict[str, Any] | None = None):
        super().__init__(settings)
        #: endpoint -> whether its server takes the extra sampling fields (learned at check / open)
        self._extended: dict[str, bool] = {}

    def identity(self) -> dict[str, Any]:
        return {"engine": self.name, "version": self.version, "api": self.settings["api"]}

    # ------------------------------------------------------------------ what it can do

    def unsupported(self, decoding: Decoding) -> str | None:
        if decoding.strategy in ("beam", "beam_sample"):
            return "OpenAI-compatible APIs have no beam search (num_beams > 1); use [engine] name = 'vllm' or 'transformers' with the model's weights"
        extra = extra_params_needed(decoding)
        if not extra:
            return None
        mode = self.settings["server_params"]
        if mode == "vllm":
            return None
        if mode == "auto" and self._extended and all(self._extended.values()):
            return None
        where = "the server does not take them" if mode == "none" or self._extended else "no server was checked to take them"
        return (
            f"{', '.join(extra)} {'is' if len(extra) == 1 else 'are'} not OpenAI API parameters and {where} "
            "(vLLM's and SGLang's servers do: set [engine] server_params = 'vllm' if yours does)"
        )

    def check(self, spec: ModelSpec) -> None:
        model_base_url(spec)  # a model without a server is refused first, naming its key
        if spec.finetune is not None:
            raise UserError(
                f"the openai engine sends prompts to a served model and cannot apply a LoRA adapter; set finetune = false for '{spec.name}'",
                key=f"models.{spec.name}.finetune",
            )
        client = self._client(spec)
        try:
            self._extended[client.base_url] = probe(client, spec.base_model, self.settings["server_params"])
        finally:
            client.close()

    def open(self, adapter: ModelAdapter, spec: ModelSpec, adapter_dir: Path | None) -> OpenAISession:
        if adapter_dir is not None:
            raise UserError(f"the openai engine cannot apply a LoRA adapter to the served model '{spec.name}'; set finetune = false", key=f"models.{spec.name}.finetune")
        client = self._client(spec)
        try:
            extended = probe(client, spec.base_model, self.settings["server_params"])
        except BaseException:
            client.close()
            raise
        self._extended[client.base_url] = extended
        return OpenAISession(client, spec.base_model, self.settings["api"], extended, int(self.settings["concurrency"]), int(self.settings["batch_size"]))

    def _client(self, spec: ModelSpec) -> Client:
        s = self.settings
        return Client(
            model_base_url(spec), spec.options.get("api_key_env"), timeout=s["timeout"], max_retries=s["max_retries"],
            backoff=s["backoff"], max_backoff=s["max_backoff"], pool=int(s["concurrency"]),
        )


def model_base_url(spec: ModelSpec) -> str:
    base_url = spec.options.get("base_url")
    if not base_url:
        raise UserError(
            f"the openai engine needs the server of model '{spec.name}': use adapter = 'served' with base_url = 'http://host:port/v1' "
            "and base_model = the served model's name",
            key=f"models.{spec.name}.adapter",
        )
    return str(base_url)


def probe(client: Client, model: str, server_params: str) -> bool:
    """``GET /models``: the server is there, takes the key and serves ``model``. Returns whether it takes the extra fields.

    Raises one UserError saying what is wrong (unreachable, key refused, model not served)."""
    from .openai_client import RequestFailed

    where = client.base_url
    try:
        listing = client.get("/models")
    except ApiError as exc:
        if exc.status in (401, 403):
            how = f"the key in ${client.api_key_env}" if client.api_key_env else "no API key (set api_key_env to the name of the variable holding one)"
            raise UserError(f"the server at {where} refused {how} (HTTP {exc.status}: {exc.message})", key="api_key_env") from None
        if exc.status == 404:
            raise UserError(f"{where} does not answer GET /models (HTTP 404): is it the API root of an OpenAI-compatible server (usually ending in /v1)?", key="base_url") from None
        raise UserError(f"the server at {where} answered GET /models with HTTP {exc.status}: {exc.message}", key="base_url") from None
    except RequestFailed as exc:
        raise UserError(f"cannot reach an OpenAI-compatible server at {where}: {exc}; is it running, and is base_url right?", key="base_url") from None
    data = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(data, list):
        raise UserError(f"the server at {where} answered GET /models with no model list; is base_url the API root (usually ending in /v1)?", key="base_url")
    served = {str(m.get("id")): m for m in data if isinstance(m, dict)}
    if model not in served:
        names = ", ".join(sorted(served)) or "none"
        raise UserError(f"the server at {where} does not serve the model '{model}'; it serves: {names}", key="base_model")
    if server_params == "vllm":
        return True
    if server_params == "none":
        return False
    return str(served[model].get("owned_by", "")).lower() in EXTENDED_SERVERS


def extra_params_needed(d: Decoding) -> list[str]:
    """The decoding fields an OpenAI server cannot take (non-neutral top_k, min_p, repetition_penalty)."""
    out = []
    if d.do_sample and d.top_k > 0:
        out.append(f"top_k={d.top_k}")
    if d.do_sample and d.min_p > 0:
        out.append(f"min_p={d.min_p}")
    if d.repetition_penalty != 1.0:
        out.append(f"repetition_penalty={d.repetition_penalty}")
    return out


class OpenAISession:
    """Requests to one served model, ``concurrency`` at a time."""

    def __init__(self, client: Client, model: str, api: str, extended: bool, concurrency: int, batch_size: int):
        self.client = client
        self.model = model
        self.api = api
        self.extended = extended
        self.concurrency = concurrency
        self.batch_size = batch_size
        self._stop = threading.Event()

    def close(self) -> None:
        self._stop.set()
        self.client.close()

    # ------------------------------------------------------------------ requests

    def body(self, req: GenRequest) -> tuple[str, dict[str, Any]]:
        """The endpoint and JSON body of one request (raises UserError for what the server cannot do)."""
        d = req.decoding
        if d.strategy not in ("greedy", "sample"):
            raise UserError(f"the openai engine cannot decode '{d.strategy}' (OpenAI-compatible APIs have no beam search)", key="engine.name")
        extra = extra_params_needed(d)
        if extra and not self.extended:
            raise UserError(f"the server at {self.client.base_url} does not take {', '.join(extra)}; set [engine] server_params = 'vllm' if it does", key="engine.server_params")
        body: dict[str, Any] = {"model": self.model, "max_tokens": d.max_new_tokens, "n": 1}
        if d.strategy == "greedy":
            body["temperature"] = 0.0
        else:
            body.update(temperature=d.temperature, top_p=d.top_p, seed=int(req.seed))
        if self.extended:  # every field explicit: a generation_config.json on the server must not change the decoding
            body.update(top_k=d.top_k if d.do_sample and d.top_k > 0 else -1, min_p=d.min_p if d.do_sample else 0.0,
                        repetition_penalty=d.repetition_penalty)
        chat = self.api == "chat" or (self.api == "auto" and bool(req.messages))
        top = min(int(req.logprobs), MAX_TOP_LOGPROBS)
        if chat:
            messages = list(req.messages) or [("user", req.prompt)]
            body["messages"] = [{"role": role, "content": content} for role, content in messages]
            if messages[-1][0] == "assistant":  # a primed reply to continue (a judge's verdict)
                if not self.extended:
                    raise UserError(
                        f"the server at {self.client.base_url} cannot continue a primed assistant reply (vLLM's continue_final_message); "
                        "for a judge, set ask = 'generate'", key="ask",
                    )
                body.update(continue_final_message=True, add_generation_prompt=False)
            if top:
                body.update(logprobs=True, top_logprobs=top)
            return "/chat/completions", body
        body["prompt"] = req.prompt
        if top:
            body["logprobs"] = top
        return "/completions", body

    def _one(self, req: GenRequest) -> GenResult:
        path, body = self.body(req)
        t0 = time.perf_counter()
        try:
            data = self.client.post(path, body)
        except ApiError as exc:
            if exc.status in (401, 403):
                raise UserError(f"the server at {self.client.base_url} refused the API key (HTTP {exc.status}: {exc.message})", key="api_key_env") from None
            if exc.status == 404:
                raise UserError(f"the server at {self.client.base_url} does not serve '{self.model}' at {path} (HTTP 404: {exc.message})", key="base_model") from None
            raise RuntimeError(f"the server at {self.client.base_url} rejected a request (HTTP {exc.status}): {exc.message}") from None
        return parse_result(req, data, "chat" if path.startswith("/chat") else "completions", time.perf_counter() - t0, self.client.base_url)

    def generate(self, requests: Sequence[GenRequest], progress: Progress) -> Iterator[list[GenResult]]:
        if not requests:
            return
        for r in requests:
            self.body(r)  # refuse what cannot be sent before sending anything
        advance = progress.task("generating", len(requests))
        order = {r.key: i for i, r in enumerate(requests)}
        produced = 0
        started = time.perf_counter()
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="openai")
        pending: set[Future] = set()
        queue = list(requests)
        done: list[GenResult] = []
        try:
            while queue or pending:
                while queue and len(pending) < self.concurrency * 2:
                    pending.add(pool.submit(self._one, queue.pop(0)))
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in finished:
                    done.append(f.result())  # a request that failed after its retries fails the call (the cell)
                last = not queue and not pending
                ready = len(done) if last else len(done) - len(done) % self.batch_size
                if ready:
                    batch, done = sorted(done[:ready], key=lambda g: order[g.key]), done[ready:]
                    for i in range(0, len(batch), self.batch_size):
                        chunk = batch[i : i + self.batch_size]
                        produced += sum(g.new_tokens for g in chunk)
                        advance(len(chunk), tok_s=round(produced / max(time.perf_counter() - started, 1e-9), 1))
                        yield chunk
        finally:
            for f in pending:
                f.cancel()
            pool.shutdown(wait=False, cancel_futures=True)


def parse_result(req: GenRequest, data: Any, api: str, seconds: float, where: str = "") -> GenResult:
    """A GenResult from a chat or completions response (log-probabilities when the response has them)."""
    try:
        choice = data["choices"][0]
    except (KeyError, IndexError, TypeError):
        raise RuntimeError(f"the server at {where} answered without choices: {str(data)[:200]}") from None
    if api == "chat":
        text = (choice.get("message") or {}).get("content") or ""
    else:
        text = choice.get("text") or ""
    usage = data.get("usage") if isinstance(data, dict) else None
    logprobs = parse_logprobs(choice.get("logprobs"), api) if req.logprobs else None
    new_tokens = int((usage or {}).get("completion_tokens") or (len(logprobs) if logprobs else 0))
    prompt_tokens = int((usage or {}).get("prompt_tokens") or 0)
    finish = "length" if choice.get("finish_reason") == "length" else "eos"
    return GenResult(req.key, text.strip(), prompt_tokens, new_tokens, round(seconds, 4), finish, logprobs)


def parse_logprobs(raw: Any, api: str) -> tuple[TokenLogprob, ...] | None:
    """Chat (``content: [{token, logprob, top_logprobs: [{token, logprob}]}]``) or completions
    (``tokens``, ``token_logprobs``, ``top_logprobs: [{token: logprob}]``) log-probabilities; None when absent."""
    if not isinstance(raw, dict):
        return None
    out = []
    try:
        if api == "chat":
            content = raw.get("content")
            if not isinstance(content, list):
                return None
            for item in content:
                top = tuple(sorted(((str(t["token"]), float(t["logprob"])) for t in item.get("top_logprobs") or []), key=lambda p: -p[1]))
                out.append(TokenLogprob(str(item["token"]), float(item["logprob"]), top))
        else:
            tokens, lps, tops = raw.get("tokens"), raw.get("token_logprobs"), raw.get("top_logprobs")
            if not isinstance(tokens, list) or not isinstance(lps, list):
                return None
            for i, (tok, lp) in enumerate(zip(tokens, lps)):
                alts = tops[i] if isinstance(tops, list) and i < len(tops) and isinstance(tops[i], dict) else {}
                top = tuple(sorted(((str(t), float(v)) for t, v in alts.items()), key=lambda p: -p[1]))
                out.append(TokenLogprob(str(tok), float(lp) if lp is not None else float("-inf"), top))
    except (KeyError, TypeError, ValueError):
        return None
    return tuple(out)


@hookimpl
def harness_register_engines(register):
    register(OpenAIEngine)
