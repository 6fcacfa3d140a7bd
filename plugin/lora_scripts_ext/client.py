"""HTTP client for a lora-scripts server (its A1111-style API plus the training routes).

Every failure becomes a LoraScriptsError whose message names the server and says what to do, because it
ends up in A1111's console or in a Gradio message, where a traceback helps nobody.
"""

from __future__ import annotations

import base64
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Iterable
from urllib.parse import quote

import requests

from . import DEFAULT_URL


class LoraScriptsError(Exception):
    """A request to the lora-scripts server failed; the message is meant for the user."""


@dataclass
class DatasetImage:
    data: bytes
    caption: str | None = None
    file_name: str | None = None


class Client:
    def __init__(self, base_url: str = DEFAULT_URL, username: str = "", password: str = "", timeout: float = 10.0):
        url = (base_url or DEFAULT_URL).strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise LoraScriptsError(f"lora-scripts server URL must start with http:// or https://, got {base_url!r}")
        self.base_url = url
        self.timeout = timeout
        self.session = requests.Session()
        if username:
            self.session.auth = (username, password)

    # ------------------------------------------------------------------ plumbing

    def _request(self, method: str, path: str, *, stream: bool = False, timeout: float | None = None, **kw: Any) -> requests.Response:
        url = self.base_url + path
        try:
            r = self.session.request(method, url, timeout=timeout or self.timeout, stream=stream, **kw)
        except requests.Timeout:
            # Before ConnectionError: a connect timeout is both, and a busy server is not a missing one.
            raise LoraScriptsError(f"lora-scripts server at {self.base_url} did not answer {method} {path} within {timeout or self.timeout:g} s") from None
        except requests.ConnectionError as e:
            raise LoraScriptsError(
                f"lora-scripts server at {self.base_url} is unreachable ({_reason(e)}); "
                f"start it with `lora-scripts serve --port {_port(self.base_url)}` or fix the URL in Settings → lora-scripts"
            ) from None
        if r.status_code == 401:
            raise LoraScriptsError(f"lora-scripts server at {self.base_url} refused the credentials (HTTP 401); set the user and password of its --api-auth in Settings → lora-scripts")
        if r.status_code >= 400:
            raise LoraScriptsError(f"lora-scripts server: {method} {path} failed with HTTP {r.status_code}: {_detail(r)}")
        return r

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        r = self._request(method, path, **kw)
        try:
            return r.json()
        except ValueError:
            raise LoraScriptsError(f"lora-scripts server: {method} {path} answered something that is not JSON; is {self.base_url} a lora-scripts server?") from None

    # ------------------------------------------------------------------ API

    def ping(self) -> None:
        """Raises LoraScriptsError unless the server answers."""
        self._json("GET", "/internal/ping", timeout=min(self.timeout, 5.0))

    def jobs(self) -> list[dict]:
        return self._json("GET", "/sdapi/v1/train/jobs")

    def job(self, job_id: str) -> dict:
        return self._json("GET", f"/sdapi/v1/train/jobs/{quote(job_id, safe='')}")

    def loras(self) -> list[dict]:
        return self._json("GET", "/sdapi/v1/loras")

    def refresh_loras(self) -> None:
        self._json("POST", "/sdapi/v1/refresh-loras")

    def datasets(self) -> list[dict]:
        return self._json("GET", "/sdapi/v1/train/datasets")

    def download_lora(self, name: str, dest: str) -> str:
        """Writes the LoRA file to `dest` atomically (a reader never sees half a file); returns `dest`."""
        r = self._request("GET", f"/sdapi/v1/loras/{quote(name, safe='')}/file", stream=True, timeout=max(self.timeout, 60.0))
        _write_atomic(dest, r.iter_content(1 << 20))
        return dest

    def lora_preview(self, name: str) -> bytes | None:
        try:
            return self._request("GET", f"/sdapi/v1/loras/{quote(name, safe='')}/preview").content
        except LoraScriptsError as e:
            if "HTTP 404" in str(e):
                return None
            raise

    def add_images(self, dataset: str, images: Iterable[DatasetImage], mode: str = "missing") -> dict:
        """Adds images (created if the dataset is new); captions follow `mode` where a file already has one."""
        payload = {
            "mode": mode,
            "images": [
                {k: v for k, v in (("image", base64.b64encode(i.data).decode("ascii")), ("caption", i.caption), ("file_name", i.file_name)) if v is not None}
                for i in images
            ],
        }
        return self._json("POST", f"/sdapi/v1/train/datasets/{quote(dataset, safe='')}/images", json=payload, timeout=max(self.timeout, 60.0))


def _write_atomic(dest: str, chunks: Iterable[bytes]) -> None:
    folder = os.path.dirname(os.path.abspath(dest))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(dest) + ".", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            for c in chunks:
                if c:
                    f.write(c)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_bytes_atomic(dest: str, data: bytes) -> None:
    _write_atomic(dest, [data])


def _detail(r: requests.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return (r.text or "").strip()[:300] or r.reason
    if isinstance(body, dict):
        for k in ("detail", "error", "message"):
            if isinstance(body.get(k), str):
                return body[k]
    return str(body)[:300]


def _reason(e: Exception) -> str:
    text = str(e)
    for hint in ("Connection refused", "Name or service not known", "No route to host", "timed out"):
        if hint in text:
            return hint.lower()
    return "connection failed"


def _port(url: str) -> str:
    rest = url.split("://", 1)[-1].split("/", 1)[0]
    return rest.rsplit(":", 1)[1] if ":" in rest else ("443" if url.startswith("https") else "80")
