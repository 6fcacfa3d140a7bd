"""Background hand-off: every training that finishes on the server lands in A1111's Lora folder.

Runs in a daemon thread so A1111's start-up never waits on it; an unreachable server is reported once per
outage, not every poll. Jobs already handed off are remembered in a small JSON file beside the LoRAs, so a
LoRA that a user deleted in A1111 is not copied back at the next start.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Callable

from .client import Client, LoraScriptsError, write_bytes_atomic
from .handoff import Installed, install_lora

STATE_FILE = ".lora-scripts-imported.json"


class TrainingWatcher:
    def __init__(
        self,
        client_factory: Callable[[], Client],
        lora_dir: str,
        on_installed: Callable[[Installed], None] = lambda _i: None,
        log: Callable[[str], None] = print,
        interval: float = 10.0,
    ):
        self.client_factory = client_factory
        self.lora_dir = lora_dir
        self.on_installed = on_installed
        self.log = log
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._offline: str | None = None

    # ---------------------------------------------------------------- state

    def _state_path(self) -> str:
        return os.path.join(self.lora_dir, STATE_FILE)

    def imported(self) -> set[str]:
        try:
            with open(self._state_path(), encoding="utf-8") as f:
                data = json.load(f)
            return set(data.get("jobs", [])) if isinstance(data, dict) else set()
        except (OSError, ValueError):
            return set()

    def _remember(self, job_ids: set[str]) -> None:
        os.makedirs(self.lora_dir, exist_ok=True)
        write_bytes_atomic(self._state_path(), (json.dumps({"jobs": sorted(job_ids)}, indent=1) + "\n").encode("utf-8"))

    # ---------------------------------------------------------------- work

    def poll_once(self) -> list[Installed]:
        """Hands off every finished job not seen before; returns what was installed. Never raises."""
        try:
            client = self.client_factory()
            jobs = client.jobs()
        except LoraScriptsError as e:
            if self._offline != str(e):
                self.log(f"[lora-scripts] {e}")
                self._offline = str(e)
            return []
        if self._offline:
            self.log(f"[lora-scripts] connected to {client.base_url}")
            self._offline = None
        seen = self.imported()
        done = [j for j in jobs if j.get("status") == "done" and j.get("id") not in seen and j.get("output_name")]
        installed: list[Installed] = []
        for job in done:
            try:
                got = install_lora(client, str(job["output_name"]), self.lora_dir, job=job)
            except LoraScriptsError as e:
                self.log(f"[lora-scripts] could not take LoRA {job.get('output_name')!r} of job {job.get('id')}: {e}")
                continue
            seen.add(str(job["id"]))
            self._remember(seen)
            installed.append(got)
            self.log(f"[lora-scripts] LoRA {got.name} is in {self.lora_dir}; use it as <lora:{got.name}:0.8>")
            try:
                self.on_installed(got)
            except Exception as e:  # A1111's refresh must never stop the hand-off.
                self.log(f"[lora-scripts] LoRA list refresh failed: {e}")
        return installed

    def start(self) -> None:
        if self._thread and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="lora-scripts-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.interval)
