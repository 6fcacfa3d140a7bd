"""A real lora-scripts server on loopback for the extension's tests, started from this checkout with the
sd-tiny fixture checkpoint (tests/fixtures, or LORA_SCRIPTS_FIXTURES), in a fresh data folder."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PLUGIN = os.path.dirname(HERE)
REPO = os.path.dirname(PLUGIN)
sys.path.insert(0, PLUGIN)

from lora_scripts_ext.client import Client  # noqa: E402


def fixtures_dir() -> str:
    return os.path.abspath(os.path.join(REPO, os.environ.get("LORA_SCRIPTS_FIXTURES", "tests/fixtures")))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_bytes(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A plain RGB PNG, so the tests need no imaging library."""
    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


class Server:
    def __init__(self, *extra_args: str):
        self.data = tempfile.mkdtemp(prefix="lora-scripts-plugin-")
        ckpt = os.path.join(self.data, "models", "Stable-diffusion")
        os.makedirs(ckpt)
        os.makedirs(os.path.join(self.data, "models", "Lora"))
        sd = os.path.join(fixtures_dir(), "sd-tiny")
        for name in ("sd-tiny.safetensors", "sd-tiny.yaml"):
            if os.path.exists(os.path.join(sd, name)):
                os.symlink(os.path.join(sd, name), os.path.join(ckpt, name))
        tok = os.path.join(sd, "diffusers", "tokenizer")
        if os.path.isdir(tok):
            os.symlink(tok, os.path.join(self.data, "models", "tokenizer"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(self.data, "server.log")
        self.log = open(self.log_path, "wb")
        env = dict(os.environ, LORA_SCRIPTS_TRAIN_THREADS="1")
        self.proc = subprocess.Popen(
            ["node", os.path.join(REPO, "bin", "lora-scripts.js"), "serve", "--port", str(self.port), "--data-dir", self.data, *extra_args],
            cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lora-scripts server exited with {self.proc.returncode}: {self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"lora-scripts server did not listen within 60 s: {self.output()}")

    def output(self) -> str:
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")[-2000:]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        shutil.rmtree(self.data, ignore_errors=True)


@pytest.fixture(scope="session")
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def auth_server():
    s = Server("--api-auth", "alice:secret")
    yield s
    s.stop()


@pytest.fixture()
def client(server) -> Client:
    # Generous: CI machines may be busy, and a slow answer is not what these tests are about.
    return Client(server.url, timeout=120)
