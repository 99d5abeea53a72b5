r"""
MS-CXR phrase grounding (Boecking et al., 2022), read from a user's local copy.

MS-CXR is credentialed data (PhysioNet): it is never shipped or downloaded
here. A local copy is a folder (``root``) holding

- the release CSV, ``MS_CXR_Local_Alignment_v1.1.0.csv`` (with a ``split``
  column) or ``MS_CXR_Local_Alignment_v1.0.0.csv`` (without), and
- the MIMIC-CXR-JPG images its ``path`` column points to, relative to
  ``root``: ``files/p10/p10000032/s50414267/<dicom_id>.jpg``.

The CSV has one row per box (columns ``dicom_id, category_name,
label_text, path, x, y, w, h, image_width, image_height`` and, in v1.1.0,
``split``). Rows are grouped by ``(path, label_text)`` into one sample: a
phrase with one or more boxes, in the order of first appearance.

Boxes are ``(x, y, w, h)`` in pixels of the full-resolution image. When the
image file found is smaller or larger than ``image_width x image_height``
(a downsampled copy), the boxes are scaled to the file's pixel grid with a
:class:`UserWarning`; the image size is read from the file header, so
indexing never decodes pixels. If the JPEG is missing but a DICOM of the same
name (``.dcm``) is there, as in a MIMIC-CXR (DICOM) copy, that is used.

v1.0.0 has no ``split`` column: asking for a split then raises an error
(no fallback split is invented, so results stay comparable with papers that
use the official v1.1.0 split).
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from captum_matex.data.images import ImageReadError, Radiograph, image_size, read_image

__all__ = ["CSV_NAMES", "MSCXR", "MSCXRError", "MSCXRSample", "REQUIRED_COLUMNS", "FINDINGS"]

CSV_NAMES = ("MS_CXR_Local_Alignment_v1.1.0.csv", "MS_CXR_Local_Alignment_v1.0.0.csv")
REQUIRED_COLUMNS = (
    "dicom_id", "category_name", "label_text", "path", "x", "y", "w", "h", "image_width", "image_height",
)
FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Lung Opacity",
    "Pleural Effusion", "Pneumonia", "Pneumothorax",
)
_SPLIT_ALIASES = {"valid": "val", "validation": "val", "dev": "val"}


class MSCXRError(ValueError):
    r"""A local MS-CXR copy is incomplete or malformed; the message names the file and the fix."""


@dataclass
class MSCXRSample:
    r"""
    One MS-CXR image-phrase pair.

    Attributes:

        dicom_id (str): MIMIC-CXR DICOM id.
        path (str): The image path as written in the CSV (relative to the root).
        file (Path): The image file actually read (JPEG, or DICOM fallback).
        phrase (str): The grounded phrase (``label_text``).
        finding (str): The finding (``category_name``), e.g. ``"Pneumothorax"``.
        boxes (list of tuple): ``(x, y, w, h)`` boxes in pixels of ``file``
            as read (scaled when the file's size differs from the CSV's).
        original_size (tuple): ``(H, W)`` of ``file``, the grid ``boxes`` use.
        csv_size (tuple): ``(image_height, image_width)`` from the CSV.
        csv_boxes (list of tuple): The boxes exactly as in the CSV.
        split (str or None): ``"train"``, ``"val"`` or ``"test"`` (v1.1.0), else None.
        index (int): Position in the dataset.

    The :attr:`image` property reads the image on first access and keeps it.

    Examples::

        >>> sample = MSCXR("/data/ms-cxr")[0]
        >>> sample.phrase, sample.boxes
        ('small left apical pneumothorax', [(1630.0, 310.0, 420.0, 380.0)])
        >>> sample.image.size == sample.original_size
        True
    """

    dicom_id: str
    path: str
    file: Path
    phrase: str
    finding: str
    boxes: list[tuple[float, float, float, float]]
    original_size: tuple[int, int]
    csv_size: tuple[int, int]
    csv_boxes: list[tuple[float, float, float, float]]
    split: str | None = None
    index: int = 0
    _image: Radiograph | None = field(default=None, repr=False, compare=False)

    @property
    def image(self) -> Radiograph:
        r"""
        The radiograph, read lazily (once) with :func:`~captum_matex.data.read_image`.

        Returns:
            Radiograph: ``(H, W)`` float32 pixels in [0, 1].

        Raises:
            ImageReadError: the file cannot be read.
        """
        if self._image is None:
            image = read_image(self.file)
            if image.size != self.original_size:
                raise ImageReadError(
                    f"{self.file}: decoded size {image.size} differs from its header size "
                    f"{self.original_size}"
                )
            self._image = image
        return self._image


@dataclass
class _Group:
    dicom_id: str
    path: str
    phrase: str
    finding: str
    csv_size: tuple[int, int]
    split: str | None
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    line: int = 0


class MSCXR(Sequence[MSCXRSample]):
    r"""
    The MS-CXR phrase-grounding set from a local copy, one item per (image, phrase).

    Args:

        root (str or Path): Folder holding the MIMIC-CXR-JPG ``files/``
            tree that the CSV's ``path`` column is relative to (and, by
            default, the CSV).
        csv (str or Path, optional): The release CSV; a relative path is
            taken relative to ``root``. Default: the first of
            :data:`CSV_NAMES` found in ``root`` (newest version first).
        split (str, optional): ``"train"``, ``"val"`` or ``"test"`` (v1.1.0
            only; ``"valid"``/``"validation"`` mean ``"val"``). Default:
            None (every sample).
        findings (sequence of str, optional): Keep only these
            ``category_name`` values (case-insensitive). Default: all.
        check_files (bool, optional): Check at construction that every
            image file exists (one ``stat`` per image). Default: True

    Raises:
        MSCXRError: no CSV found (the message lists the names looked for and
            the folder), missing columns (named), a ``split`` requested from
            v1.0.0 or absent from the CSV, malformed numbers (with the CSV
            line), or a missing image file (named, with the root).

    Examples::

        >>> data = MSCXR("/data/ms-cxr", split="test")
        >>> len(data)
        ...
        >>> sample = data[0]
        >>> pixels, geometries = prepare([sample.image], processor)
        >>> boxes_on_input = geometries[0].boxes_to_input(sample.boxes)
    """

    def __init__(
        self,
        root: str | Path,
        csv: str | Path | None = None,
        split: str | None = None,
        findings: Sequence[str] | None = None,
        check_files: bool = True,
    ) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise MSCXRError(f"MS-CXR root {self.root} is not a directory")
        self.csv_path = self._find_csv(csv)
        rows, columns = self._read_rows()
        self.version = "1.1.0" if "split" in columns else "1.0.0"
        self.split = _SPLIT_ALIASES.get(split.lower(), split.lower()) if split is not None else None
        if self.split is not None and "split" not in columns:
            raise MSCXRError(
                f"{self.csv_path.name} has no 'split' column (MS-CXR v1.0.0); pass split=None, "
                "or use MS_CXR_Local_Alignment_v1.1.0.csv, which has the official train/val/test split"
            )
        groups = self._group(rows)
        if self.split is not None:
            available = sorted({g.split for g in groups if g.split})
            if self.split not in available:
                raise MSCXRError(
                    f"split {split!r} not in {self.csv_path.name}; it has {', '.join(available) or 'none'}"
                )
            groups = [g for g in groups if g.split == self.split]
        if findings is not None:
            wanted = {f.lower() for f in findings}
            groups = [g for g in groups if g.finding.lower() in wanted]
        self._groups = groups
        self._files: dict[str, Path] = {}
        if check_files:
            for g in groups:
                self._file(g.path)

    # ----------------------------------------------------------------- setup
    def _find_csv(self, csv_arg: str | Path | None) -> Path:
        if csv_arg is not None:
            path = Path(csv_arg).expanduser()
            if not path.is_absolute() and not path.is_file():
                path = self.root / path
            if not path.is_file():
                raise MSCXRError(f"MS-CXR CSV {path} not found")
            return path
        for name in CSV_NAMES:
            if (self.root / name).is_file():
                return self.root / name
        others = sorted(p.name for p in self.root.glob("MS_CXR_Local_Alignment_v*.csv"))
        if others:
            return self.root / others[-1]
        raise MSCXRError(
            f"no MS-CXR CSV in {self.root}: looked for {' and '.join(CSV_NAMES)} "
            "(and MS_CXR_Local_Alignment_v*.csv); pass csv=PATH if it is elsewhere"
        )

    def _read_rows(self) -> tuple[list[tuple[int, dict[str, str]]], list[str]]:
        with self.csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise MSCXRError(
                    f"{self.csv_path} lacks column(s) {', '.join(missing)}; an MS-CXR CSV has "
                    f"{', '.join(REQUIRED_COLUMNS)}[, split]. Found: {', '.join(columns) or 'no header'}"
                )
            rows = [
                (line, {k.strip(): (v or "").strip() for k, v in row.items() if k is not None})
                for line, row in enumerate(reader, start=2)
            ]
        return rows, columns

    def _group(self, rows: list[tuple[int, dict[str, str]]]) -> list[_Group]:
        groups: dict[tuple[str, str], _Group] = {}
        for line, row in rows:
            try:
                box = tuple(float(row[k]) for k in ("x", "y", "w", "h"))
                csv_size = (int(float(row["image_height"])), int(float(row["image_width"])))
            except ValueError as exc:
                raise MSCXRError(f"{self.csv_path}, line {line}: not a number ({exc})") from exc
            key = (row["path"], row["label_text"])
            split = row.get("split", "").lower()
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Group(
                    dicom_id=row["dicom_id"], path=row["path"], phrase=row["label_text"],
                    finding=row["category_name"], csv_size=csv_size,
                    split=_SPLIT_ALIASES.get(split, split) or None,
                    line=line,
                )
            group.boxes.append(box)  # type: ignore[arg-type]
        return list(groups.values())

    def _file(self, rel: str) -> Path:
        if rel in self._files:
            return self._files[rel]
        first = self.root / rel
        candidates = [first, first.with_suffix(".dcm")]
        if self.root.name == "files" and rel.startswith("files/"):
            candidates += [self.root.parent / rel, (self.root.parent / rel).with_suffix(".dcm")]
        for candidate in candidates:
            if candidate.is_file():
                self._files[rel] = candidate
                return candidate
        raise MSCXRError(
            f"MS-CXR image {rel} not found under root {self.root} (looked for {first} and "
            f"{first.with_suffix('.dcm').name}); root must be the MIMIC-CXR-JPG folder holding 'files/'"
        )

    # -------------------------------------------------------------- sequence
    def __len__(self) -> int:
        r"""Number of (image, phrase) samples."""
        return len(self._groups)

    def __getitem__(self, index: int) -> MSCXRSample:  # type: ignore[override]
        r"""
        The sample at ``index``; reads only the image header (for its size).

        Args:

            index (int): Position (negative counts from the end).

        Returns:
            MSCXRSample: Phrase, finding, boxes (on the file's grid), lazy image.

        Raises:
            IndexError: ``index`` out of range.
            MSCXRError: the image file is missing.
        """
        if isinstance(index, slice):
            raise TypeError("MSCXR does not support slicing; use [data[i] for i in range(...)]")
        n = len(self._groups)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for MS-CXR with {n} samples")
        index %= n
        g = self._groups[index]
        file = self._file(g.path)
        try:
            size = image_size(file)
        except ImageReadError as exc:
            raise MSCXRError(str(exc)) from exc
        boxes = list(g.boxes)
        if size != g.csv_size:
            sy, sx = size[0] / g.csv_size[0], size[1] / g.csv_size[1]
            warnings.warn(
                f"{file}: image is {size[1]}x{size[0]} but MS-CXR says {g.csv_size[1]}x{g.csv_size[0]}; "
                f"scaling its boxes by ({sx:.4g}, {sy:.4g})",
                UserWarning,
                stacklevel=2,
            )
            boxes = [(x * sx, y * sy, w * sx, h * sy) for x, y, w, h in boxes]
        return MSCXRSample(
            dicom_id=g.dicom_id, path=g.path, file=file, phrase=g.phrase, finding=g.finding,
            boxes=boxes, original_size=size, csv_size=g.csv_size, csv_boxes=list(g.boxes),
            split=g.split, index=index,
        )

    def __iter__(self) -> Iterator[MSCXRSample]:
        r"""Iterate over the samples in CSV order."""
        for i in range(len(self)):
            yield self[i]

    @property
    def phrases(self) -> list[str]:
        r"""The phrase of every sample, in order (no file access)."""
        return [g.phrase for g in self._groups]

    @property
    def findings(self) -> dict[str, int]:
        r"""Number of samples per finding (``category_name``), no file access."""
        counts: dict[str, int] = {}
        for g in self._groups:
            counts[g.finding] = counts.get(g.finding, 0) + 1
        return counts

    def __repr__(self) -> str:
        return (f"MSCXR(root={str(self.root)!r}, csv={self.csv_path.name!r}, version={self.version!r}, "
                f"split={self.split!r}, samples={len(self)})")

    def describe(self) -> dict[str, Any]:
        r"""
        A JSON-ready summary (root, CSV, version, split, sample count, findings).

        Returns:
            dict: The summary.
        """
        return {"root": str(self.root), "csv": str(self.csv_path), "version": self.version,
                "split": self.split, "samples": len(self), "findings": self.findings}
