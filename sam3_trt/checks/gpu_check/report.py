"""The gpu-check report: ``gpu-check.json`` and ``summary.md``, rewritten whole after every stage event.

Each write goes to a temporary file first and replaces the old one, so a run stopped at any point (its
deadline, a crash, a machine taken back) leaves a report that is complete up to the last stage event: a
stage shows ``running`` only while it runs, and a stage stopped by the deadline says so.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from ...errors import Sam3TrtError
from ...paths import write_atomic

REPORT_FILE = "gpu-check.json"
SUMMARY_FILE = "summary.md"

#: Stage statuses. ``ok``: ran and passed its checks; ``failed``: ran, a check failed (numbers kept);
#: ``error``: raised (the exact message kept); ``stopped``: cut by the deadline; ``skipped``: not started
#: (a stage it needs did not pass, or no time left); ``needs-gpu``: not run on a machine without a GPU.
STATUSES = ("running", "ok", "failed", "error", "stopped", "skipped", "needs-gpu")

#: Stages with these statuses are not run again by ``--resume``.
FINAL = ("ok", "failed")


class CheckReport:
    """The report of one gpu-check folder (thread-safe: the deadline watchdog writes too).

    Args:
        folder: Report folder (created).
        header: Run-level facts (options, simulated, versions); stored under their keys.
        resume: Keep the stages an earlier run of this folder finished (see :data:`FINAL`).
    """

    def __init__(self, folder: Path, header: dict[str, Any], resume: bool = False) -> None:
        self.folder = folder
        self.path = folder / REPORT_FILE
        self._lock = threading.RLock()
        self._t0 = time.perf_counter()  # start of the running stage
        folder.mkdir(parents=True, exist_ok=True)
        self.data: dict[str, Any] = {"kind": "gpu-check", **header, "started": _now(), "stages": {}}
        if resume and self.path.is_file():
            try:
                old = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise Sam3TrtError(f"--resume: {self.path} is not readable JSON ({exc}); drop --resume") from None
            if old.get("simulated") != header.get("simulated"):
                raise Sam3TrtError(
                    f"--resume: {self.path} holds a {'simulated' if old.get('simulated') else 'real'} run; "
                    "resume it with the same --simulate setting or use another --out"
                )
            self.data["stages"] = {k: v for k, v in old.get("stages", {}).items() if v.get("status") in FINAL}
            self.data["resumed_from"] = old.get("started")
        self.write()

    # -- stages --------------------------------------------------------------------------------------
    def finished(self, key: str) -> bool:
        """Whether stage ``key`` holds a final result (:data:`FINAL`)."""
        with self._lock:
            return self.data["stages"].get(key, {}).get("status") in FINAL

    def status(self, key: str) -> str | None:
        with self._lock:
            return self.data["stages"].get(key, {}).get("status")

    def result(self, key: str) -> dict[str, Any]:
        """The result dict of stage ``key`` (empty when it has none)."""
        with self._lock:
            return dict(self.data["stages"].get(key, {}).get("result") or {})

    def begin(self, key: str, name: str, what: str) -> None:
        with self._lock:
            self.data["stages"][key] = {"name": name, "what": what, "status": "running", "started": _now()}
            self._t0 = time.perf_counter()
            self.write()

    def end(
        self, key: str, status: str, result: dict[str, Any] | None = None, error: str | None = None, **extra: Any
    ) -> None:
        """Record the end of stage ``key`` and write the report."""
        if status not in STATUSES:
            raise ValueError(f"unknown stage status {status!r}")
        with self._lock:
            entry = self.data["stages"].setdefault(key, {})
            if entry.get("status") == "stopped":
                return  # the deadline already closed it; the stage's own late end does not overwrite that
            entry["status"] = status
            if entry.get("started") and "seconds" not in extra:
                extra["seconds"] = round(time.perf_counter() - self._t0, 2)
            entry.update(extra)
            if result is not None:
                entry["result"] = result
            if error is not None:
                entry["error"] = error
            self.write()

    def mark(self, key: str, name: str, what: str, status: str, why: str) -> None:
        """A stage that is not run: ``status`` with the reason."""
        with self._lock:
            self.data["stages"][key] = {"name": name, "what": what, "status": status, "why": why}
            self.write()

    def stop_running(self, why: str) -> str | None:
        """Mark the running stage ``stopped`` (the deadline); returns its key."""
        with self._lock:
            for key, entry in self.data["stages"].items():
                if entry.get("status") == "running":
                    entry["status"] = "stopped"
                    entry["why"] = why
                    entry["seconds"] = round(time.perf_counter() - self._t0, 2)
                    self.write()
                    return key
            return None

    def close(self, footer: str = "") -> None:
        with self._lock:
            self.data["ended"] = _now()
            if footer:
                self.data["footer"] = footer
            self.write()

    # -- files ---------------------------------------------------------------------------------------
    def write(self) -> None:
        with self._lock:
            write_atomic(self.path, json.dumps(self.data, indent=1, default=str) + "\n")
            write_atomic(self.folder / SUMMARY_FILE, summary_md(self.data))


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")


def summary_md(data: dict[str, Any]) -> str:
    """``summary.md``: one row per stage with its status and headline numbers or error."""
    env = data.get("stages", {}).get("a", {}).get("result", {})
    gpu = env.get("gpu", {})
    head = [
        "# sam3-trt gpu-check"
        + (" (SIMULATED: GPU doubles on a CPU, no measurement)" if data.get("simulated") else ""),
        "",
        f"Started {data.get('started')}" + (f", ended {data['ended']}" if data.get("ended") else " (running)") + ".",
    ]
    if gpu:
        names = ", ".join(gpu.get("names", [])) or f"no GPU ({gpu.get('reason')})"
        head.append(f"GPU: {names}; driver {gpu.get('driver_version')}; {gpu.get('sm')}.")
    weights = data.get("weights")
    if weights:
        head.append(f"Weights: {weights}.")
    rows = ["", "| stage | status | seconds | detail |", "|---|---|---|---|"]
    for key, entry in data.get("stages", {}).items():
        detail = entry.get("error") or entry.get("why") or entry.get("headline") or ""
        rows.append(
            f"| {key} {entry.get('name', '')} | {entry.get('status')} | {entry.get('seconds', '')} | "
            f"{str(detail).replace('|', '/')[:400]} |"
        )
    footer = ["", data["footer"]] if data.get("footer") else []
    return "\n".join([*head, *rows, *footer]) + "\n"
