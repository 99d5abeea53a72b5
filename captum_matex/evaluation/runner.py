"""``matex benchmark``: a resumable comparative study, sharded over ``torchrun`` workers."""

from __future__ import annotations

import inspect
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from captum_matex.data.geometry import prepare
from captum_matex.evaluation.distributed import Worker, worker_from_env
from captum_matex.evaluation.report import comparison_figure, save_figure, write_report
from captum_matex.evaluation.results import (
    ResultsFileError,
    ResultsLog,
    checksum,
    read_rows,
    study_logs,
)
from captum_matex.evaluation.robustness import SPLITS, RobustnessSplit
from captum_matex.evaluation.samples import EvalSample, mscxr_samples, phantom_samples
from captum_matex.evaluation.scoring import (
    BatchInputs,
    curve_step,
    faithfulness_scores,
    localisation_scores,
    prepare_batch,
    sanity_scores,
    swapped_phrase,
)
from captum_matex.forward import SimilarityForward
from captum_matex.registry import BUILT_IN, metrics, methods

#: The methods of the headline study (MATEX, its ablations, the prior-only
#: control and the baselines that explain the same score; those a model's
#: family refuses are left out with the reason, e.g. Captum's LLMAttribution
#: runs on LLaVA models only).
DEFAULT_METHODS = (
    "matex", "matex_no_anatomy", "matex_with_text_prior", "matex_no_rollout",
    "matex_no_consistency", "matex_no_propagation", "prior_only", "m2ib", "chefer", "rollout",
    "gradcam", "grad_eclip", "legrad", "patch_text", "saliency", "integrated_gradients",
    "llm_attribution", "matex_with_decoder_prior",
)
#: The phantom's own splits; :data:`~captum_matex.evaluation.robustness.SPLITS`
#: adds the held-out robustness splits made from its test films.
PHANTOM_SPLITS = ("train", "val", "test")


class BenchmarkError(ValueError):
    r"""A study that cannot run as configured (unknown method, no samples, ...)."""


@dataclass
class BenchmarkConfig:
    r"""Everything that defines a study's results (its fingerprint keys resume).

    Attributes:
        dataset: ``"phantom"`` (embedded) or ``"mscxr"`` (a local copy at ``root``).
        split: data split; on the phantom also a robustness split
            (:mod:`~captum_matex.evaluation.robustness`: ``geometry``,
            ``paraphrase``, ``side_swap``, ``markers``, ``two_finding``), whose
            own metrics join the study.
        limit: number of image-phrase pairs (``None``: all).
        methods: registered method names (:data:`captum_matex.registry.methods`).
        model: what :func:`~captum_matex.loading.load_model` loads (a
            transformers CLIP or an open_clip model, folder or hub name);
            ``None`` is the embedded phantom model.
        root: MS-CXR folder (``dataset="mscxr"``).
        csv: MS-CXR release CSV when not in ``root``.
        mode: ``"letterbox"`` or ``"processor"`` (see :func:`~captum_matex.data.geometry.prepare`).
        batch_size: samples per batch; batches are fixed chunks of the sample
            list, so results do not depend on the number of workers or on resumes.
        faithfulness: score confidence drop / increase and deletion / insertion.
        curve_steps: steps of the deletion / insertion curves (each removes or
            inserts ``1 / curve_steps`` of the pixels).
        sanity: score model randomisation and prompt sensitivity.
        seed: seed of the phantom split and of stochastic methods.
        method_kwargs: constructor arguments per method, e.g. ``{"m2ib": {"beta": 1}}``.
        atlas: chest atlas of the anatomical prior for the methods that use one
            (MATEX and its ablations, ``prior_only``): ``"generic"`` (the
            built-in clinical-film atlas), ``"phantom"``
            (:func:`~captum_matex.zoo.phantom_atlas`) or ``"auto"`` (phantom
            atlas for the phantom data set, generic otherwise).
        metrics: registered metric names to score (:data:`captum_matex.registry.metrics`);
            ``None``: every metric whose ``benchmark`` is ``"default"``. Either
            way ``faithfulness`` and ``sanity`` switch their categories off.
        randomisation_draws: randomised models the model-randomisation check
            draws (:func:`~captum_matex.metrics.randomized_model` with seeds
            ``seed``, ``seed + 1``, ...; each a copy of the model, held in
            memory for the whole run); each pair's value is the mean over the
            draws. One draw's score moves with the draw more than the
            pairs' interval shows (see the docs' results page).

    Raises:
        BenchmarkError: ``split`` is not a split of ``dataset``.
    """

    dataset: str = "phantom"
    split: str = "test"
    limit: int | None = 200
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    model: str | None = None
    root: str | None = None
    csv: str | None = None
    mode: str = "letterbox"
    batch_size: int = 8
    faithfulness: bool = True
    curve_steps: int = 16
    sanity: bool = True
    seed: int = 0
    method_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    atlas: str = "auto"
    metrics: list[str] | None = None
    randomisation_draws: int = 1

    def __post_init__(self) -> None:
        if self.randomisation_draws < 1:
            raise BenchmarkError(
                f"randomisation_draws must be at least 1, got {self.randomisation_draws}")
        if self.dataset == "phantom" and self.split not in PHANTOM_SPLITS + tuple(SPLITS):
            raise BenchmarkError(
                f"unknown phantom split {self.split!r}; choose {', '.join(PHANTOM_SPLITS)} or a "
                f"robustness split: {', '.join(SPLITS)}")
        if self.dataset != "phantom" and self.split in SPLITS:
            raise BenchmarkError(f"the robustness split {self.split!r} is made from phantom "
                                 "films; use dataset 'phantom'")

    def robustness_split(self) -> RobustnessSplit | None:
        r"""The study's robustness split, or None on a plain split."""
        return SPLITS.get(self.split) if self.dataset == "phantom" else None

    def build(self, name: str, model, processor):
        r"""Method ``name`` on ``model``, with its ``method_kwargs`` and the
        configured atlas."""
        method = methods.get(name)
        kwargs = dict(self.method_kwargs.get(name, {}))
        if self._atlas() == "phantom" and _takes_anatomical_prior(method):
            from captum_matex.zoo import phantom_prior

            kwargs.setdefault("anatomical_prior", phantom_prior())
        return method(model, processor, **kwargs)

    def metric_names(self, category: str | None = None) -> list[str]:
        r"""The metrics this study scores, in registry (or ``metrics``) order.

        Args:
            category (str, optional): Only this category's metrics. Default: None.

        Returns:
            list of str: Registered metric names.

        Raises:
            BenchmarkError: an unknown metric, or one the benchmark cannot call.
        """
        names = self._chosen_metrics(self.metrics)
        return [n for n in names if category is None or metrics.get(n).category == category]

    def _chosen_metrics(self, chosen: list[str] | None) -> list[str]:
        if chosen is None:
            chosen = [e.name for e in metrics.entries() if e.obj.benchmark == "default"]
        unknown = [n for n in chosen if n not in metrics]
        if unknown:
            raise BenchmarkError(f"unknown metric(s) {', '.join(unknown)}; available: "
                                 f"{', '.join(metrics.available())}")
        split = self.robustness_split()
        own = split.metrics + split.needs if split else ()
        chosen = [n for n in chosen if not (split and n in split.derived)]  # added from rows
        owners = {n: s.name for s in SPLITS.values() for n in s.metrics + s.derived}
        foreign = [n for n in chosen if n in owners and n not in own]
        if foreign:
            raise BenchmarkError(", ".join(f"{n} is scored on the {owners[n]} split only"
                                           for n in foreign)
                                 + " (where it is added without --metrics)")
        unusable = [n for n in chosen if metrics.get(n).benchmark == "unsupported"]
        if unusable:
            raise BenchmarkError(f"the benchmark cannot score {', '.join(unusable)} (its "
                                 "function takes other arguments); call it directly")
        off = {"faithfulness": not self.faithfulness, "sanity": not self.sanity}
        chosen = [n for n in chosen if not off.get(metrics.get(n).category)]
        return chosen + [n for n in own if n not in chosen]

    def settings(self) -> dict[str, Any]:
        r"""The configuration that identifies the study's results (its fingerprint).

        ``metrics`` is resolved to names and left out when it equals the
        built-in default set, and ``randomisation_draws`` when it is 1, so
        studies started before either could be chosen resume.

        Returns:
            dict: JSON-ready settings.
        """
        settings = asdict(self)
        settings["metrics"] = self.metric_names()
        builtin = [e.name for e in metrics.entries()
                   if e.origin == BUILT_IN and e.obj.benchmark == "default"]
        if settings["metrics"] == self._chosen_metrics(builtin):
            del settings["metrics"]
        if self.randomisation_draws == 1:
            del settings["randomisation_draws"]
        return settings

    def _atlas(self) -> str:
        if self.atlas not in ("auto", "generic", "phantom"):
            raise BenchmarkError(f"atlas must be 'auto', 'generic' or 'phantom', got {self.atlas!r}")
        if self.atlas == "auto":
            return "phantom" if self.dataset == "phantom" else "generic"
        return self.atlas

    def samples(self) -> list[EvalSample]:
        r"""The study's samples, in a fixed order."""
        if self.dataset == "phantom":
            split = self.robustness_split()
            if split is not None:
                return split.samples(self.limit, self.seed)
            return phantom_samples(self.split, self.limit, self.seed)
        if self.dataset == "mscxr":
            if not self.root:
                raise BenchmarkError("dataset 'mscxr' needs root=<folder of your MS-CXR copy>")
            split = None if self.split in ("all", "") else self.split
            return mscxr_samples(self.root, split, self.limit, self.csv)
        raise BenchmarkError(f"dataset must be 'phantom' or 'mscxr', got {self.dataset!r}")


def _takes_anatomical_prior(method: type) -> bool:
    if getattr(method, "removed", None) == "anatomical_prior":  # the MATEX ablation without it
        return False
    for klass in method.__mro__:
        if "__init__" in vars(klass):
            params = inspect.signature(klass.__init__).parameters
            if "anatomical_prior" in params:
                return True
            if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
                return False
    return False


def _rank_file(out: Path, rank: int) -> Path:
    return out / f"results.rank{rank}.jsonl"


class _Model:
    r"""The study's model and processor, loaded on first use and then kept, so a
    worker loads it once for its shard and the report's overlays."""

    def __init__(self, config: BenchmarkConfig, device: str) -> None:
        self.config = config
        self.device = device
        self._loaded: tuple[Any, Any] | None = None

    def __call__(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from captum_matex.loading import load_model

            self._loaded = load_model(self.config.model, self.device)
        return self._loaded


def _check_methods(names: list[str]) -> None:
    unknown = [n for n in names if n not in methods]
    if unknown:
        raise BenchmarkError(f"unknown method(s) {', '.join(unknown)}; available: "
                             f"{', '.join(methods.available())}")


class _MethodRunner:
    r"""One method on the trained model (and on its randomised copies for the
    sanity check), scoring batches."""

    def __init__(self, name: str, model, processor, config: BenchmarkConfig,
                 randomised: list) -> None:
        self.name = name
        self.explainer = config.build(name, model, processor)
        self.random_explainers = [config.build(name, net, processor) for net in randomised]
        self.config = config
        self.localisation = config.metric_names("localisation")
        self.faithfulness = config.metric_names("faithfulness")
        self.sanity = config.metric_names("sanity")
        self.compares = {metrics.get(n).compares for n in self.sanity}

    def _maps(self, explainer, pixels: torch.Tensor, phrases: list[str]) -> torch.Tensor:
        torch.manual_seed(self.config.seed)  # stochastic methods repeat exactly per batch
        return explainer.attribute(pixels, (phrases,), output="pixel").detach()

    def _references(self, batch: BatchInputs, phrases: list[str]) -> dict[str, torch.Tensor]:
        r"""The maps the chosen sanity metrics compare with (see ``MetricInfo.compares``)."""
        references = {}
        if "swapped" in self.compares:
            swapped = [swapped_phrase(p) for p in phrases]
            references["swapped"] = self._maps(self.explainer, batch.pixels, swapped)
        if "randomised" in self.compares:
            references["randomised"] = [self._maps(explainer, batch.pixels, phrases)
                                        for explainer in self.random_explainers]
        return references

    def score(self, batch: BatchInputs) -> list[dict]:
        phrases = [s.phrase for s in batch.samples]
        start = time.perf_counter()
        maps = self._maps(self.explainer, batch.pixels, phrases)
        seconds = (time.perf_counter() - start) / len(phrases)
        scores = localisation_scores(maps, batch, self.localisation)
        scores["score"] = batch.scores
        forward = self.explainer.forward_func
        if self.faithfulness:
            patch = curve_step(batch.pixels.shape, self.config.curve_steps)
            with torch.no_grad():
                scores.update(faithfulness_scores(forward, maps, batch, self.faithfulness, patch))
        if self.sanity:
            scores.update(sanity_scores(maps, self._references(batch, phrases), self.sanity))
        rows = []
        for i, sample in enumerate(batch.samples):
            row = {"sample": sample.id, "method": self.name, **sample_record(sample)}
            row.update({name: _clean(values[i]) for name, values in scores.items()})
            row["seconds_per_sample"] = seconds
            rows.append(row)
        return rows


def _clean(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _done_keys(out: Path, config: dict) -> set[tuple[str, str]]:
    return {(r["sample"], r["method"]) for r in read_rows(study_logs(out), config)}


def ground_truth_digest(sample: EvalSample) -> str:
    r"""A short digest of what ``sample`` is scored against: its boxes and its
    per-metric regions, to 0.01 pixel (so that rounding noise of another CPU
    does not count as a change)."""
    def rounded(boxes) -> list:
        return [[round(float(v), 2) for v in box] for box in boxes]

    truth = {"boxes": rounded(sample.boxes),
             "regions": {name: rounded(boxes) for name, boxes in sorted(sample.regions.items())}}
    return checksum(truth)[:12]


def sample_record(sample: EvalSample) -> dict:
    r"""What each row records of its sample: finding, phrase, side and
    :func:`ground_truth_digest`. A stored row whose record differs from the
    sample as it is drawn now was computed on other data."""
    return {"finding": sample.finding, "phrase": sample.phrase,
            "laterality": sample.laterality, "truth": ground_truth_digest(sample)}


def _discard_stale(out: Path, config: dict, samples: list[EvalSample]) -> None:
    r"""Remove, from every worker's file, the rows of samples that have
    changed since they were scored (same id, another :func:`sample_record`:
    the data's generator or files changed), so that they are scored again
    instead of being reported with the new samples. Rows written before
    ``"truth"`` was recorded are compared on the other fields."""
    current = {s.id: sample_record(s) for s in samples}

    def stale(row: dict) -> bool:
        drawn = current.get(row["sample"])
        return drawn is not None and any(
            row.get(field) != value for field, value in drawn.items()
            if field in row or field != "truth")

    removed = sum(ResultsLog(path, config).discard(stale)
                  for path in study_logs(out))
    if removed:
        warnings.warn(f"benchmark: {removed} stored rows scored samples that have changed "
                      "since (their phrase, finding, side or boxes differ); they are scored again",
                      stacklevel=3)


def _discard_methods(out: Path, config: dict, names: Sequence[str]) -> None:
    r"""Remove, from every worker's file, the rows of the methods ``names``."""
    if names:
        chosen = set(names)
        for path in study_logs(out):
            ResultsLog(path, config).discard(lambda row: row["method"] in chosen)


def _set_aside_foreign(out: Path, config: dict, keep: Path) -> None:
    for path in study_logs(out):
        if path == keep:
            continue
        try:
            ResultsLog(path, config, read_only=True)
        except ResultsFileError:
            os.replace(path, path.with_name(path.name + ".bak"))


def run_benchmark(
    config: BenchmarkConfig,
    out: str | Path,
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
    rescore: Sequence[str] = (),
) -> dict | None:
    r"""Run (or resume) a comparative study and write its report.

    Each worker appends checksummed rows to its own ``results.rank<r>.jsonl``
    (see :class:`~captum_matex.evaluation.results.ResultsLog`); work already
    in any worker's file is skipped, so a killed run resumes where it stopped
    and the finished result set equals an uninterrupted run's. Stored rows of
    samples that have changed since they were scored (another phrase,
    finding, side or boxes under the same id) are removed, with a warning,
    and scored again. Samples are cut into fixed chunks of ``batch_size``,
    dealt round-robin to the ``torchrun`` workers. Worker 0 then merges all
    files and writes ``summary.json``, ``results.md`` and figures
    (:func:`write_report`).

    Args:
        config: the study.
        out: output folder.
        device: torch device; under ``torchrun`` with CUDA, ``"cuda"`` means
            this worker's ``LOCAL_RANK`` GPU.
        force: set aside (as ``*.bak``) damaged or foreign results files
            instead of refusing to run.
        progress: show a progress bar.
        rescore: methods of the study whose stored rows are removed and
            scored again on every sample. A resumed study sees changed data,
            not changed code: after a change to a method (or to a default it
            reads), name it here; to resume an interrupted rescoring, leave
            it out (each call scores the named methods again from scratch).

    Returns:
        The summary on worker 0, ``None`` on other workers.

    Raises:
        ResultsFileError: ``out`` holds damaged results or another study's,
            and ``force`` is not given.
        BenchmarkError: a ``rescore`` method is not one of the study's.
    """
    _check_methods(config.methods)
    outside = sorted(set(rescore) - set(config.methods))
    if outside:
        raise BenchmarkError(f"cannot rescore {', '.join(outside)}: not among the study's "
                             f"methods ({', '.join(config.methods)})")
    settings = config.settings()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with worker_from_env(device) as worker:
        if device == "cuda" and worker.world > 1:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', worker.rank))}"
        own = _rank_file(out, worker.rank)
        log = ResultsLog(own, settings, force=force)
        worker.barrier()
        if worker.is_main and force:
            _set_aside_foreign(out, settings, own)
        samples = config.samples()
        if worker.is_main:
            _discard_stale(out, settings, samples)
            _discard_methods(out, settings, rescore)
        worker.barrier()
        done = _done_keys(out, settings)
        worker.barrier()
        model = _Model(config, device)
        _run_shard(config, samples, worker, log, done, model, device, progress)
        worker.barrier()
        if not worker.is_main:
            return None
        rows = read_rows(study_logs(out), settings)
        split = config.robustness_split()
        if split is not None:
            rows = split.columns(rows)  # scores over several rows (a film's two phrases)
        summary = write_report(rows, settings, out)
        _write_overlays(config, out, model, device)
        return summary


def applicable_methods(names: list[str], model) -> list[str]:
    r"""The methods of ``names`` that run on ``model``'s family; each one the
    family refuses (e.g. M2IB on a SigLIP model, which has no class token)
    is left out with a warning that gives the reason."""
    from captum_matex.adapters import get_adapter

    adapter = get_adapter(model)
    kept = []
    for name in names:
        method = methods.get(name)
        refusal = adapter.refusal(method.get_name(), getattr(method, "requires", frozenset()))
        if refusal is None:
            kept.append(name)
        else:
            warnings.warn(f"benchmark: {name} left out: {refusal}", stacklevel=2)
    return kept


def _run_shard(config: BenchmarkConfig, samples: list[EvalSample], worker: Worker,
               log: ResultsLog, done: set, load: _Model, device: str, progress: bool) -> None:
    if not samples:
        raise BenchmarkError("the study has no samples (check --split, --limit and the data)")
    model, processor = load()
    names = applicable_methods(config.methods, model)
    chunks = [samples[i : i + config.batch_size] for i in range(0, len(samples), config.batch_size)]
    work = [
        (chunk, [name for name in names if any((s.id, name) not in done for s in chunk)])
        for chunk in worker.shard(chunks)
    ]
    work = [(chunk, names) for chunk, names in work if names]
    if not work:
        return
    randomised = []
    if any(metrics.get(n).compares == "randomised" for n in config.metric_names("sanity")):
        from captum_matex.metrics import randomized_model

        randomised = [randomized_model(model, seed=config.seed + draw)
                      for draw in range(config.randomisation_draws)]
    forward = SimilarityForward(model, processor)
    runners: dict[str, _MethodRunner] = {}
    bar = tqdm(total=sum(len(c) * len(names) for c, names in work),
               desc=f"benchmark (worker {worker.rank})", unit="explanation",
               disable=not progress, position=worker.rank)
    for chunk, names in work:  # every method on a batch before the next batch
        batch = prepare_batch(chunk, processor, config.mode, forward, device)
        for name in names:
            if name not in runners:
                runners[name] = _MethodRunner(name, model, processor, config, randomised)
            bar.set_postfix(method=name)
            rows = [r for r in runners[name].score(batch) if (r["sample"], name) not in done]
            log.append(rows)
            bar.update(len(chunk))
    bar.close()


def _write_overlays(config: BenchmarkConfig, out: Path, load: _Model, device: str,
                    cases: int = 4) -> None:
    r"""``figures/overlays.png``: the first ``cases`` samples (rows) explained
    by every method (columns), on the original pixel grid with the boxes."""
    from captum_matex.data.geometry import maps_to_original

    samples = config.samples()[:cases]
    model, processor = load()
    images = [s.load() for s in samples]
    pixels, geometries = prepare(images, processor, config.mode, device=device)
    columns = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the shard already warned
        names = applicable_methods(config.methods, model)
    for name in names:
        explainer = config.build(name, model, processor)
        torch.manual_seed(config.seed)
        maps = explainer.attribute(pixels, ([s.phrase for s in samples],), output="pixel")
        columns[name] = maps_to_original(maps.detach()[:, 0], geometries)
    figure = comparison_figure([im.pixels for im in images], columns,
                               [s.boxes for s in samples], [s.phrase for s in samples])
    save_figure(figure, out / "figures" / "overlays.png")
