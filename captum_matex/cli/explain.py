"""``matex explain``: explain one radiograph for one or more phrases and write figures."""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from captum_matex._quiet import VERBOSE_HELP
from captum_matex.cli._common import CLIError, load_model, load_plugins, prepare_out, quietly, save
from captum_matex.cli._report import REPORT_NAME, write_report
from captum_matex.loading import EMBEDDED, MODEL_HELP

if TYPE_CHECKING:
    from captum_matex.data.geometry import Geometry
    from captum_matex.data.images import Radiograph


#: Phrases beyond which ``matex explain`` shows a progress bar (on a terminal).
PROGRESS_AFTER = 3
#: Longest side, in pixels, of the radiograph drawn under an overlay.
DISPLAY_MAX = 1024
#: ``--mode`` choices (see :func:`captum_matex.data.geometry.prepare`).
MODES = ("letterbox", "processor")
#: A real checkpoint to name when the embedded phantom model meets a real film.
REAL_MODEL = "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"


def _slug(text: str) -> str:
    r"""A file-name-safe stem (``[a-z0-9-]``, at most 40 characters) of ``text``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "phrase"


def _method(name: str) -> type:
    r"""The registered method ``name`` (:data:`captum_matex.registry.methods`)."""
    from captum_matex.registry import methods

    load_plugins()
    try:
        return methods.get(name)
    except KeyError as exc:
        raise CLIError(str(exc).strip("'\"")) from exc


def _phrases(args: argparse.Namespace, generated: Sequence[str] = ()) -> list[str]:
    r"""The phrases to explain: ``generated`` (a report's), positional, then
    ``--phrase``; never empty unless a report was generated."""
    phrases = list(generated) + list(args.phrases) + list(args.phrase or [])
    if not phrases and not args.generate:
        raise CLIError("give at least one phrase, e.g. matex explain IMAGE 'left pleural effusion'"
                       " (or --generate with a generative model)")
    if any(not p.strip() for p in phrases):
        raise CLIError("a phrase is empty; give a finding to explain")
    return phrases


def _read_radiograph(path: str) -> Radiograph:
    r"""Read ``path`` (PNG, JPEG or DICOM) as a :class:`~captum_matex.data.Radiograph`."""
    from captum_matex.data.images import ImageReadError, read_image

    try:
        return read_image(path)
    except ImageReadError as exc:
        raise CLIError(str(exc)) from exc
    except OSError as exc:
        reason = exc.strerror or exc
        raise CLIError(f"{path}: cannot read the file ({reason}); check its permissions") from exc


def _domain_warnings(radiograph: Radiograph, model: str | None) -> list[str]:
    r"""
    Why the explanation may mean nothing: the embedded phantom model (no
    ``--model``) on a DICOM file or on an image unlike a phantom film
    (:func:`~captum_matex.data.domain.is_phantom_like`).

    Returns:
        list of str: One message, or none.
    """
    from captum_matex.data.domain import is_phantom_like

    if model is not None and model not in EMBEDDED:
        return []
    if radiograph.metadata.get("format") == "dicom":
        why = "is a DICOM file"
    elif not is_phantom_like(radiograph):
        why = "does not look like a phantom film"
    else:
        return []
    return [
        f"{radiograph.path} {why}, but the embedded model is trained on synthetic phantom "
        "films only: its maps on a real radiograph mean nothing. Pass --model with a real "
        f"checkpoint, e.g. --model {REAL_MODEL}"
    ]


def _output_names(stems: Sequence[str], stages: bool, report: bool) -> list[str]:
    r"""Every file ``matex explain`` writes into ``--out`` for these phrase stems."""
    names = [name for s in stems for name in (f"overlay_{s}.png", f"map_{s}.npy")]
    if stages:
        names += [f"stages_{s}.png" for s in stems]
    return names + ["summary.json"] + ([REPORT_NAME] if report else [])


def _generated_report(explainer: Any, image: torch.Tensor, max_new_tokens: int) -> str:
    r"""The model's greedy report of ``image`` (``--generate``).

    Raises:
        CLIError: the model is not generative, or cannot decode its report.
    """
    generate = getattr(explainer.adapter, "generate", None)
    if generate is None:
        raise CLIError(
            f"--generate needs a generative model (LLaVA, PaliGemma, Gemma 3, phantom-llava); "
            f"{explainer.adapter.family} models score given phrases: pass them instead"
        )
    try:
        return generate(image, max_new_tokens)[0]
    except ValueError as exc:
        raise CLIError(str(exc)) from exc


def _model_input(radiograph: Radiograph, processor: Any, mode: str,
                 device: str) -> tuple[torch.Tensor, Geometry]:
    r"""
    The model input of ``radiograph`` and its :class:`~captum_matex.data.geometry.Geometry`.

    Returns:
        tuple: ``(pixel_values (1, C, h, w), geometry)``.
    """
    from captum_matex.data.geometry import prepare

    try:
        pixels, geometries = prepare([radiograph], processor, mode=mode, device=device)
    except ValueError as exc:
        raise CLIError(f"cannot build the model input with --mode {mode}: {exc}") from exc
    return pixels, geometries[0]


def _explain_batch(explainer: Any, image: torch.Tensor,
                   phrases: list[str]) -> tuple[torch.Tensor, list[float], Any]:
    r"""
    Maps on the input grid (one row per phrase), scores and MATEX diagnostics
    (or None) for ``phrases`` on the one image ``image`` ``(1, C, H, W)``.

    MATEX runs the image tower once for all phrases
    (:meth:`~captum_matex.MATEX.attribute_phrases`); other methods explain
    the image repeated once per phrase (a view, no copy).
    """
    from captum_matex import MATEX

    if isinstance(explainer, MATEX):
        maps, diagnostics = explainer.attribute_phrases(
            image, phrases, output="pixel", return_diagnostics=True
        )
        return maps[0], diagnostics.score.tolist(), diagnostics
    pixels = image.expand(len(phrases), -1, -1, -1)
    maps = explainer.attribute(pixels, (phrases,), output="pixel")
    with torch.no_grad():
        scores = explainer.forward_func(pixels, phrases).tolist()
    return maps, scores, None


def _layer_weights(diagnostics: Any, index: int) -> list[float] | None:
    r"""MATEX's layer-consistency weights of sample ``index``; None for other methods."""
    if diagnostics is None or diagnostics.layer_weights is None:
        return None
    return diagnostics.layer_weights[index].tolist()


def _for_display(image: torch.Tensor) -> torch.Tensor:
    r"""``image`` ``(H, W)``, area-downsampled to a longest side of at most :data:`DISPLAY_MAX`."""
    import torch.nn.functional as F

    factor = DISPLAY_MAX / max(image.shape)
    if factor >= 1:
        return image
    size = (max(1, round(image.shape[0] * factor)), max(1, round(image.shape[1] * factor)))
    return F.interpolate(image[None, None].float(), size=size, mode="area")[0, 0]


def _peak_xy(heat: torch.Tensor) -> list[int]:
    r"""``[x, y]``: column and row of the maximum of an ``(H, W)`` map."""
    row, col = divmod(int(heat.argmax()), heat.shape[1])
    return [col, row]


def _progress(total: int) -> Any:
    r"""A tqdm bar on stderr, shown on a terminal for more than :data:`PROGRESS_AFTER` phrases."""
    from tqdm import tqdm

    return tqdm(total=total, desc="matex explain", unit="phrase", file=sys.stderr,
                disable=True if total <= PROGRESS_AFTER else None)


def _explain_chunk(explainer: Any, image: torch.Tensor, geometry: Geometry, phrases: list[str],
                   stems: list[str], out: Path, method: str, backdrop: torch.Tensor) -> list[dict]:
    r"""
    Explain ``image`` for ``phrases`` in one pass and write each phrase's files.

    Returns:
        list of dict: One ``summary.json`` record per phrase.
    """
    from captum_matex.data.geometry import maps_to_original
    from captum_matex.viz import diagnostics_figure, overlay_figure

    maps, scores, diagnostics = _explain_batch(explainer, image, phrases)
    originals = maps_to_original(maps.detach().float().cpu(), [geometry] * len(phrases))
    records = []
    for i, (phrase, stem, heat) in enumerate(zip(phrases, stems, originals)):
        heat = heat[0]
        np.save(out / f"map_{stem}.npy", heat.numpy())
        title = f"{method}: {phrase!r}\nscore {scores[i]:.3f}"
        save(overlay_figure(backdrop, _for_display(heat), title), out / f"overlay_{stem}.png")
        files = [f"overlay_{stem}.png", f"map_{stem}.npy"]
        if diagnostics is not None:
            save(diagnostics_figure(diagnostics, i, image[0]), out / f"stages_{stem}.png")
            files.append(f"stages_{stem}.png")
        records.append({
            "phrase": phrase,
            "score": scores[i],
            "peak_xy_original": _peak_xy(heat),
            "layer_weights": _layer_weights(diagnostics, i),
            "files": files,
        })
    return records


@quietly
def explain(args: argparse.Namespace) -> dict:
    r"""
    ``matex explain``: explain one image (PNG, JPEG or DICOM) for one or more phrases.

    The image is read and preprocessed once (``--mode letterbox`` keeps the
    whole film; ``processor`` reproduces the model's resize and centre crop)
    and explained for ``--batch-size`` phrases per pass (MATEX: one pass of
    the image tower and one backward pass per phrase; other methods: one
    batched pass, the image expanded without a copy). Every map is put back
    on the original pixel grid. Writes into ``--out``, refusing to overwrite
    without ``--force``; file names are slugs of the phrases, so nothing is
    written elsewhere:

    - ``overlay_<stem>.png``: the map over the original radiograph;
    - ``map_<stem>.npy``: the map, float32 ``(H, W)`` on the original grid;
    - ``stages_<stem>.png``: MATEX's stages on the patch grid (MATEX only);
    - ``summary.json``: sizes, geometry, per phrase the score and the
      map's peak ``[x, y]`` in original pixels, and ``warnings`` (empty, or
      why the maps may mean nothing, also printed on stderr);
    - with ``--generate`` (generative models): the model's greedy report is
      split into phrases, each explained, and ``report.html`` shows the
      report with every phrase linked to its overlay (``summary.json`` gets
      ``"report"``).

    Third-party loading messages are hidden unless ``--verbose``.

    Returns:
        dict: The summary written to ``summary.json``.
    """
    from captum_matex import MATEX
    from captum_matex.phrases import is_negated, report_phrases

    _phrases(args)  # refuse a call without phrases before loading anything
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not isinstance(args.method_kwargs, dict):
        raise CLIError(f"--method-kwargs must be a JSON object, got {args.method_kwargs!r}")
    method = _method(args.method)
    if args.method_kwargs:  # refuse arguments the method does not take before loading anything
        try:
            inspect.signature(method).bind_partial(None, None, **args.method_kwargs)
        except TypeError as exc:
            raise CLIError(f"--method-kwargs: {exc}") from exc
    radiograph = _read_radiograph(args.image)
    cautions = _domain_warnings(radiograph, args.model)
    model, processor, model_name = load_model(args.model, args.device)
    image, geometry = _model_input(radiograph, processor, args.mode, args.device)
    explainer = method(model, processor, **args.method_kwargs)
    report = _generated_report(explainer, image, args.max_new_tokens) if args.generate else None
    findings = [p for p in report_phrases(report or "") if not is_negated(p)]
    phrases = _phrases(args, findings)
    out = Path(args.out)
    stems = [f"{i:02d}_{_slug(p)}" for i, p in enumerate(phrases)]
    prepare_out(out, _output_names(stems, issubclass(method, MATEX), report is not None),
                args.force)
    for message in cautions:
        print(f"matex: warning: {message}", file=sys.stderr)
    backdrop = _for_display(radiograph.to_tensor()[0])
    records: list[dict] = []
    with _progress(len(phrases)) as bar:
        for start in range(0, len(phrases), args.batch_size):
            chunk = slice(start, start + args.batch_size)
            records += _explain_chunk(explainer, image, geometry, phrases[chunk], stems[chunk],
                                      out, args.method, backdrop)
            bar.update(len(phrases[chunk]))
    summary = {
        "image": str(args.image),
        "original_size": list(radiograph.size),
        "model": model_name,
        "method": args.method,
        "method_kwargs": args.method_kwargs,
        "mode": args.mode,
        "model_input_size": list(image.shape[-2:]),
        "geometry": geometry.as_dict(),
        "visible_fraction": geometry.visible_fraction,
        "phrases": records,
        "warnings": cautions,
    }
    if report is not None:
        summary["report"] = report
        write_report(out, str(args.image), model_name, args.method, report, records)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {len(records)} explanation(s) to {out}")
    return summary


def add_parser(sub: argparse._SubParsersAction) -> None:
    r"""Add ``explain`` to ``sub``, the ``matex`` parser's sub-commands."""
    ex = sub.add_parser("explain", help="explain one image for one or more phrases")
    ex.add_argument("image", help="PNG, JPEG or DICOM radiograph")
    ex.add_argument("phrases", nargs="*", help="phrase(s) to explain")
    ex.add_argument("--phrase", action="append", help="another phrase (repeatable)")
    ex.add_argument("--generate", action="store_true",
                    help="generative models: generate the report, explain each of its phrases "
                    "(negated findings excepted) and write report.html")
    ex.add_argument("--max-new-tokens", type=int, default=64,
                    help="longest generated report, in tokens (default: 64)")
    ex.add_argument("--model", help=MODEL_HELP)
    ex.add_argument("--method", default="matex", help="explanation method (default: matex)")
    ex.add_argument("--method-kwargs", type=json.loads, default={},
                    help="JSON object of the method's constructor arguments, e.g. "
                         "'{\"registration\": null}' (MATEX's atlas left unregistered)")
    ex.add_argument("--mode", choices=MODES, default="letterbox",
                    help="letterbox: fit the whole image and pad (default); processor: the "
                    "model processor's resize and centre crop (cropped borders get 0)")
    ex.add_argument("--batch-size", type=int, default=8,
                    help="phrases explained per pass (default: 8; lower it if memory runs out)")
    ex.add_argument("--out", default="matex_out", help="output directory")
    ex.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    ex.add_argument("--force", action="store_true", help="overwrite existing outputs")
    ex.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    ex.set_defaults(func=explain)
