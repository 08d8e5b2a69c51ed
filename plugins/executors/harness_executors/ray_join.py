"""Why the driver could not join a Ray cluster, in one sentence a person can act on.

Ray's own failures to connect are a 20-second retry loop ending in ``ConnectionError: Failed
to connect to Ray cluster at …`` with the cause three exceptions deep (or, with nothing
listening, more than two minutes of retries). The ``ray`` executor asks three things before
and after ``ray.init``:

* **Is anything listening?** (:func:`check_listening`, before ``ray.init``): one TCP connection
  to ``host:port``, five seconds at most.
* **Does this process hold a token Ray can read?** (:func:`check_token_file`, before
  ``ray.init``): ``RAY_AUTH_TOKEN_PATH`` naming a missing or empty file.
* **Why did ``ray.init`` fail?** (:func:`explain`, after): the cluster refused the token (or
  its absence), a Ray or Python version that differs from the cluster's, or Ray's own first line.

How Ray 2.60 handles tokens (``ray/_private/authentication``): ``RAY_AUTH_MODE=token`` turns
authentication on; the token is read from ``RAY_AUTH_TOKEN``, else the file named by
``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``. ``ray start --head`` and ``ray.init()`` of
the cluster on this machine (``address="auto"``) turn it on by themselves when a token exists
and ``RAY_AUTH_MODE`` is unset; ``ray start --address=…`` and ``ray.init(address="host:port")``
never do: a node or driver joining an explicit address sends a token only with
``RAY_AUTH_MODE=token`` set.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

CONNECT_TIMEOUT_S = 5.0


def token_source() -> str | None:
    """Where Ray would read this process's token from (in Ray's order), or None when there is none."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return "the RAY_AUTH_TOKEN variable"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        return f"{path} (RAY_AUTH_TOKEN_PATH)"
    default = Path.home() / ".ray" / "auth_token"
    if default.is_file() and default.stat().st_size > 0:
        return "~/.ray/auth_token"
    return None


def token_mode() -> str:
    return os.environ.get("RAY_AUTH_MODE", "").strip().lower() or "unset"


def _host_port(address: str) -> tuple[str, int]:
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    host, _, port = rest.rpartition(":")
    return host.strip("[]"), int(port)


def check_listening(address: str) -> str | None:
    """Why nothing answers at ``address`` (``host:port`` or ``ray://host:port``), or None when something does."""
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return None
    except socket.gaierror:
        return f"the host '{host}' is not known (no such name or address)"
    except ConnectionRefusedError:
        return (f"nothing is listening there (connection refused): start the cluster's head on {host} with "
                f"`ray start --head --port={port}`, or correct the address")
    except TimeoutError:
        return f"no answer within {CONNECT_TIMEOUT_S:g} s: the host is down or unreachable, or a firewall drops port {port}"
    except OSError as exc:
        return f"cannot reach it: {exc.strerror or exc}"


def check_token_file() -> str | None:
    """Why the token file this process names cannot be used, or None."""
    if token_mode() != "token" or os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return None
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if not path:
        return None
    p = Path(path).expanduser()
    try:
        if p.read_text().strip():
            return None
        return f"RAY_AUTH_TOKEN_PATH names {path}, which is empty: put the cluster's token there (`ray get-auth-token` on the head prints it)"
    except OSError as exc:
        return f"RAY_AUTH_TOKEN_PATH names {path}, which cannot be read ({exc.strerror or exc}): put the cluster's token there (`ray get-auth-token` on the head prints it)"


WHERE_TOKENS_GO = "in ~/.ray/auth_token, in a file named by RAY_AUTH_TOKEN_PATH, or in RAY_AUTH_TOKEN (docs/distributed.md, \"By hand, with Ray's token\")"


def explain(exc: BaseException) -> str:
    """The likely cause of ``ray.init(address=…)`` raising ``exc``, for a person (the caller names the address)."""
    text = _chain_text(exc)
    mismatch = re.search(r"Version mismatch: The cluster was started with:\s*Ray: (\S+)\s*Python: (\S+)\s*This process.*?Ray: (\S+)\s*Python: (\S+)", text, re.S)
    if mismatch or "Version mismatch" in text:
        said = (f"the cluster runs Ray {mismatch[1]} on Python {mismatch[2]}, this process Ray {mismatch[3]} on Python {mismatch[4]}"
                if mismatch else "the cluster's Ray or Python version differs from this process's")
        return f"{said}: the driver and every node need the same Ray and Python versions (and the same harness and plugin packages)"
    mode, source = token_mode(), token_source()
    if "no authentication token was found" in text:
        return f"RAY_AUTH_MODE is 'token' but this process has no token: put the cluster's token {WHERE_TOKENS_GO}"
    if "RAY_AUTH_TOKEN_PATH is set but" in text:
        return check_token_file() or "the file RAY_AUTH_TOKEN_PATH names cannot be read or is empty"
    if "InvalidAuthToken" in text or "Unauthenticated" in text or _is_auth_error(exc):
        if mode != "token":
            have = f"; this machine has one in {source}" if source else ""
            return (f"the cluster uses token authentication and this process sent no token: RAY_AUTH_MODE is {mode} here, "
                    f"and Ray sends a token to an explicit address only with RAY_AUTH_MODE=token{have}. "
                    f"Set RAY_AUTH_MODE=token, with the cluster's token {WHERE_TOKENS_GO}")
        return (f"the cluster refused the token this process sent (from {source or 'nowhere'}): it is not the cluster's token. "
                f"Give this process the head's token (`ray get-auth-token` on the head prints it) {WHERE_TOKENS_GO}")
    if "Could not find any running Ray instance" in text:
        return "no Ray cluster runs on this machine (`ray start --head` starts one; or give its address as \"host:port\")"
    return _first_line(exc)


def _is_auth_error(exc: BaseException) -> bool:
    return any(type(e).__name__ == "AuthenticationError" for e in _chain(exc))


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in seen:
        seen.append(e)
        e = e.__cause__ or e.__context__
    return seen


def _chain_text(exc: BaseException) -> str:
    return "\n".join(f"{type(e).__name__}: {e}" for e in _chain(exc))


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:500]
