"""An append-only, checksummed results log that survives being killed at any moment."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable

FORMAT = "captum_matex-results/1"


class ResultsFileError(RuntimeError):
    r"""A results file is corrupted or belongs to another configuration."""


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=True)


def checksum(obj: Any) -> str:
    return hashlib.sha256(_canonical(obj).encode()).hexdigest()[:16]


def fingerprint(config: dict) -> str:
    r"""A short hash identifying a benchmark configuration."""
    return checksum(config)


def _line(kind: str, payload: Any) -> str:
    return _canonical({kind: payload, "sha": checksum(payload)}) + "\n"


def _parse(line: str) -> tuple[str, Any] | None:
    """``(kind, payload)`` of an intact line, ``None`` for a torn or altered one."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(record, dict) or len(record) != 2 or "sha" not in record:
        return None
    kind = next(k for k in record if k != "sha")
    if kind not in ("header", "row") or record["sha"] != checksum(record[kind]):
        return None
    return kind, record[kind]


class ResultsLog:
    r"""One worker's results: a JSON-lines file of checksummed rows after a header.

    Every row is written with its own checksum and flushed to disk
    (``fsync``) before it counts, so a process killed mid-write leaves at most
    one torn last line. On opening, a torn last line is dropped (its row is
    recomputed); a damaged line anywhere else, or a header from another
    configuration, raises :class:`ResultsFileError` instead of overwriting
    anything, unless ``force`` is given (the old file is then kept as
    ``<name>.bak``).

    Args:
        path: the file.
        config: the run's configuration; its fingerprint is stored in the
            header and compared on resume.
        force: start afresh over a damaged or foreign file.
        read_only: only read (another worker's file): nothing is repaired or
            written.
    """

    def __init__(
        self, path: str | Path, config: dict, force: bool = False, read_only: bool = False
    ) -> None:
        self.path = Path(path)
        self.config = config
        self.fingerprint = fingerprint(config)
        self.read_only = read_only
        self.rows: list[dict] = []
        if read_only:
            self.rows = self._load() if self.path.exists() else []
            return
        if self.path.exists():
            try:
                self.rows = self._load()
            except ResultsFileError:
                if not force:
                    raise
                os.replace(self.path, self.path.with_name(self.path.name + ".bak"))
                self.rows = []
        if not self.path.exists():
            self._write_atomically([_line("header", self._header())])

    def _header(self) -> dict:
        return {"format": FORMAT, "fingerprint": self.fingerprint, "config": self.config}

    def _load(self) -> list[dict]:
        lines = self.path.read_text().splitlines(keepends=True)
        parsed = [_parse(line) for line in lines]
        if not parsed or parsed[0] is None or parsed[0][0] != "header":
            raise ResultsFileError(
                f"{self.path} is not a captum_matex results file (or its header is "
                "damaged); use another --out or pass --force to set it aside"
            )
        header = parsed[0][1]
        if header.get("format") != FORMAT or header.get("fingerprint") != self.fingerprint:
            raise ResultsFileError(
                f"{self.path} holds results of another configuration "
                f"(fingerprint {header.get('fingerprint')} != {self.fingerprint}); use "
                "another --out or pass --force to set it aside"
            )
        torn_tail = parsed[-1] is None or not lines[-1].endswith("\n")
        body = parsed[1:-1] if torn_tail and len(parsed) > 1 else parsed[1:]
        if any(entry is None or entry[0] != "row" for entry in body):
            bad = next(i for i, e in enumerate(body, start=2) if e is None or e[0] != "row")
            raise ResultsFileError(
                f"{self.path}: line {bad} is damaged (checksum mismatch); refusing to "
                "continue over it; pass --force to set the file aside"
            )
        rows = [entry[1] for entry in body]
        if torn_tail and len(parsed) > 1 and not self.read_only:
            self._write_atomically([lines[0]] + [_line("row", row) for row in rows])
        return rows

    def _write_atomically(self, lines: Iterable[str]) -> None:
        temp = self.path.with_name(self.path.name + ".tmp")
        with temp.open("w") as handle:
            handle.writelines(lines)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self.path)

    def append(self, rows: Iterable[dict]) -> None:
        r"""Append rows durably (flushed and fsynced before returning)."""
        if self.read_only:
            raise ResultsFileError(f"{self.path} was opened read-only")
        rows = list(rows)
        if not rows:
            return
        with self.path.open("a") as handle:
            handle.writelines(_line("row", row) for row in rows)
            handle.flush()
            os.fsync(handle.fileno())
        self.rows.extend(rows)

    def discard(self, stale: Callable[[dict], bool]) -> int:
        r"""Remove every row for which ``stale(row)`` is true (the file is
        rewritten atomically) and return how many were removed."""
        if self.read_only:
            raise ResultsFileError(f"{self.path} was opened read-only")
        kept = [row for row in self.rows if not stale(row)]
        removed = len(self.rows) - len(kept)
        if removed:
            self._write_atomically([_line("header", self._header())] + [_line("row", r) for r in kept])
            self.rows = kept
        return removed


def read_rows(paths: Iterable[str | Path], config: dict) -> list[dict]:
    r"""Rows of several workers' logs of the same configuration, without duplicates
    (the first occurrence of each ``(sample, method)`` key wins)."""
    seen: set[tuple] = set()
    rows = []
    for path in sorted(Path(p) for p in paths):
        for row in ResultsLog(path, config, read_only=True).rows:
            key = (row["sample"], row["method"])
            if key not in seen:
                seen.add(key)
                rows.append(row)
    return rows


def study_logs(folder: str | Path) -> list[Path]:
    r"""The workers' logs of the study in ``folder`` (``results.rank*.jsonl``), sorted."""
    return sorted(Path(folder).glob("results.rank*.jsonl"))


def read_study(folder: str | Path) -> list[dict]:
    r"""The rows of the study in ``folder``, read with the configuration its
    first log's header records (so any stored study can be read back without
    rebuilding its configuration).

    Raises:
        ResultsFileError: ``folder`` holds no log, or the first log's header is
            damaged.
    """
    logs = study_logs(folder)
    if not logs:
        raise ResultsFileError(f"{folder} holds no results.rank*.jsonl")
    with logs[0].open() as handle:
        header = _parse(handle.readline())
    if header is None or header[0] != "header":
        raise ResultsFileError(f"{logs[0]}: the header is damaged or missing")
    return read_rows(logs, header[1]["config"])
