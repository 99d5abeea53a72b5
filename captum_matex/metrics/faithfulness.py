r"""Faithfulness metrics: does the score react to the image where the map says?

All functions take a Captum-style ``forward_func(images, *additional_forward_args)``
returning one score per sample, ``(B,)`` or ``(B, 1)`` (for MATEX:
:class:`captum_matex.SimilarityForward`, the image-text cosine similarity),
the ``(B, C, H, W)`` model inputs (pixel values as the model takes them,
i.e. already normalised) and the maps, and return a ``(B,)`` tensor.
``additional_forward_args`` are per-sample (token ids ``(B, L)``, text
embeddings ``(B, E)`` or a list of ``B`` strings) and are repeated along with
the perturbed images. Forward passes run under :func:`torch.no_grad`.

A map whose values include NaN/inf gives NaN for that sample (the metric is
undefined for it); other samples are unaffected.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence, Union

import torch
import torch.nn.functional as F
from captum import metrics as captum_metrics
from torch import Tensor

from captum_matex.metrics._common import seeded

Baseline = Union[str, float, Tensor]


# --- helpers ---------------------------------------------------------------------------


def _as_tuple(args: Any) -> tuple:
    if args is None:
        return ()
    return tuple(args) if isinstance(args, tuple) else (args,)


def _repeat_args(args: tuple, batch: int, repeats: int) -> tuple:
    """Repeat per-sample arguments ``repeats`` times each (sample-major order)."""
    if repeats == 1:
        return args
    out = []
    for arg in args:
        if isinstance(arg, Tensor) and arg.ndim > 0 and arg.shape[0] == batch:
            out.append(arg.repeat_interleave(repeats, 0))
        elif isinstance(arg, (list, tuple)) and len(arg) == batch:
            out.append(type(arg)(a for a in arg for _ in range(repeats)))
        else:
            out.append(arg)
    return tuple(out)


@torch.no_grad()
def _scores(forward_func: Callable[..., Tensor], images: Tensor, args: tuple) -> Tensor:
    out = forward_func(images, *args)
    if not isinstance(out, Tensor):
        out = torch.as_tensor(out)
    if out.ndim == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if out.shape != (images.shape[0],):
        raise ValueError(
            f"forward_func must return one score per image, shape ({images.shape[0]},), "
            f"got {tuple(out.shape)}; wrap it to select the target output"
        )
    return out.detach()


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise ValueError(
            f"images must be a (B, C, H, W) tensor, got "
            f"{tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__}"
        )


def _broadcast_maps(maps: Tensor, images: Tensor) -> Tensor:
    """Maps as ``(B, 1 or C, H, W)`` broadcastable against ``images``."""
    b, c, h, w = images.shape
    if maps.ndim == 3:
        maps = maps[:, None]
    if maps.ndim != 4 or maps.shape[0] != b or maps.shape[-2:] != (h, w) or maps.shape[1] not in (1, c):
        raise ValueError(
            f"maps of shape {tuple(maps.shape)} do not fit images of shape {tuple(images.shape)}; "
            "pass (B, H, W), (B, 1, H, W) or (B, C, H, W) maps at the input resolution"
        )
    return maps.to(images.dtype)


def _finite_rows(maps: Tensor) -> Tensor:
    return torch.isfinite(maps.flatten(1)).all(1)


# --- confidence drop / increase ----------------------------------------------------------


def confidence_drop_increase(
    forward_func: Callable[..., Tensor],
    images: Tensor,
    maps: Tensor,
    additional_forward_args: Any = None,
) -> tuple[Tensor, Tensor]:
    r"""Per-sample confidence drop and increase when the image is multiplied by
    the map, exactly as M2IB (Wang et al., NeurIPS 2023) reports them.

    M2IB's evaluation uses pytorch-grad-cam's ``DropInConfidence`` and
    ``IncreaseInConfidence``: the *normalised* model input (processor output)
    is multiplied by the map in [0, 1] (min-max normalised, at the input
    resolution, broadcast over channels) and re-scored with the same cosine
    similarity:

    .. math::

        \mathrm{drop}_i = 100 \cdot \max(0,\ s(x_i) - s(x_i \odot M_i)), \qquad
        \mathrm{incr}_i = 100 \cdot \mathbb{1}[s(x_i \odot M_i) > s(x_i)]

    The data-set means of the two returned tensors are M2IB's "confidence
    drop" (**lower is better**) and "confidence increase" (**higher is
    better**, a percentage of samples). Scores are raw (absolute) cosine
    differences, not relative ones. Multiplying a normalised image by 0 sets
    a pixel to the data set's mean colour.

    Args:
        forward_func: ``f(images, *additional_forward_args) -> (B,)`` scores.
        images: ``(B, C, H, W)`` normalised model inputs.
        maps: ``(B, H, W)``, ``(B, 1, H, W)`` or ``(B, C, H, W)`` maps with
            values in [0, 1] (see :func:`~captum_matex.metrics.minmax_normalize`).
        additional_forward_args: per-sample extra arguments (e.g. token ids).

    Returns:
        ``(drop, increase)``, two ``(B,)`` tensors; NaN for samples whose
        map has NaN/inf.

    Raises:
        ValueError: if a finite map has values outside [0, 1].
    """
    _check_images(images)
    maps = _broadcast_maps(maps, images)
    finite = _finite_rows(maps)
    clean = torch.where(finite[:, None, None, None], maps, torch.zeros_like(maps))
    if bool(((clean < -1e-6) | (clean > 1 + 1e-6)).any()):
        raise ValueError(
            "confidence drop/increase needs maps in [0, 1] (M2IB multiplies the image by "
            "the min-max normalised map); apply captum_matex.metrics.minmax_normalize first"
        )
    args = _as_tuple(additional_forward_args)
    original = _scores(forward_func, images, args)
    masked = _scores(forward_func, images * clean, args)
    drop = 100 * (original - masked).clamp_min(0)
    increase = 100 * (masked > original).to(drop.dtype)
    nan = torch.full_like(drop, math.nan)
    return torch.where(finite, drop, nan), torch.where(finite, increase, nan)


def confidence_drop(
    forward_func: Callable[..., Tensor],
    images: Tensor,
    maps: Tensor,
    additional_forward_args: Any = None,
) -> Tensor:
    r"""M2IB's confidence drop per sample, ``100 * max(0, s(x) - s(x * M))``.

    **Lower is better** (range ``[0, 100 * max score]``; average over the data
    set for the reported number). See :func:`confidence_drop_increase` for
    how the map is applied (normalised image times the [0, 1] map).

    Args:
        forward_func: ``f(images, *additional_forward_args) -> (B,)`` scores.
        images: ``(B, C, H, W)`` normalised model inputs.
        maps: maps in [0, 1], ``(B, H, W)``, ``(B, 1, H, W)`` or ``(B, C, H, W)``.
        additional_forward_args: per-sample extra arguments (e.g. token ids).

    Returns:
        ``(B,)`` tensor; NaN where the map has NaN/inf.
    """
    return confidence_drop_increase(forward_func, images, maps, additional_forward_args)[0]


def confidence_increase(
    forward_func: Callable[..., Tensor],
    images: Tensor,
    maps: Tensor,
    additional_forward_args: Any = None,
) -> Tensor:
    r"""M2IB's confidence increase per sample, ``100 * 1[s(x * M) > s(x)]``.

    **Higher is better**: the data-set mean is the percentage of samples whose
    score rises when only the highlighted region is kept. See
    :func:`confidence_drop_increase` for how the map is applied; the
    arguments are those of :func:`confidence_drop`.

    Returns:
        ``(B,)`` tensor of 0 and 100; NaN where the map has NaN/inf.
    """
    return confidence_drop_increase(forward_func, images, maps, additional_forward_args)[1]


# --- deletion / insertion ----------------------------------------------------------------


def gaussian_blur(images: Tensor, kernel_size: int = 11, sigma: float = 5.0) -> Tensor:
    r"""Channel-wise Gaussian blur with replicate padding (RISE's insertion substrate:
    kernel 11, sigma 5).

    Args:
        images: ``(B, C, H, W)``.
        kernel_size: odd kernel width in pixels.
        sigma: standard deviation in pixels.

    Returns:
        Blurred ``(B, C, H, W)`` tensor.
    """
    half = kernel_size // 2
    x = torch.arange(kernel_size, device=images.device, dtype=images.dtype) - half
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    padded = F.pad(images, (half, half, half, half), mode="replicate")
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _baseline_images(images: Tensor, baseline: Baseline) -> Tensor:
    if isinstance(baseline, str):
        if baseline == "zeros":
            return torch.zeros_like(images)
        if baseline == "blur":
            return gaussian_blur(images)
        if baseline == "mean":
            return images.mean((2, 3), keepdim=True).expand_as(images)
        raise ValueError(f"unknown baseline {baseline!r}; use 'zeros', 'blur', 'mean', a number or a tensor")
    if isinstance(baseline, Tensor):
        return baseline.to(images).expand_as(images)
    return torch.full_like(images, float(baseline))


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    ph, pw = size
    return int(ph), int(pw)


def perturbation_curve(
    forward_func: Callable[..., Tensor],
    images: Tensor,
    maps: Tensor,
    additional_forward_args: Any = None,
    mode: str = "deletion",
    patch_size: int | Sequence[int] = 16,
    baseline: Baseline | None = None,
    normalize: bool = False,
    max_batch_size: int = 64,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    r"""Score curve of the deletion or insertion game (RISE, Petsiuk et al., BMVC 2018).

    Pixels are ranked by decreasing attribution (channels summed; ties in a
    seeded random order, so a constant map gives the random-order curve, the
    chance level). Step ``j`` removes (deletion: replaced by the baseline)
    or reveals (insertion: the rest is the baseline) the top
    ``min(j * ph * pw, H * W)`` pixels, i.e. one patch's worth of pixels per
    step, for ``j = 0 .. ceil(H W / (ph pw))``, and re-scores the image.

    Args:
        forward_func: ``f(images, *additional_forward_args) -> (B,)`` scores.
        images: ``(B, C, H, W)`` model inputs.
        maps: ``(B, H, W)`` or ``(B, C, H, W)`` maps at the input resolution
            (any real values; only their order is used).
        additional_forward_args: per-sample extra arguments (e.g. token ids).
        mode: ``"deletion"`` or ``"insertion"``.
        patch_size: ``(ph, pw)`` (or one int) giving the pixels per step;
            pass the model's patch size (``adapter.patch_size``).
        baseline: value of removed / not yet inserted pixels: ``"zeros"``
            (the data-set mean colour for normalised inputs; RISE's deletion
            substrate, the default for deletion), ``"blur"`` (a Gaussian blur,
            kernel 11, sigma 5: RISE's insertion substrate, the default for
            insertion), ``"mean"`` (per-image channel mean), a number, or a
            tensor broadcastable to ``images``.
        normalize: divide the curve by the unperturbed score ``s(x)`` (the
            curve then starts at 1 for deletion and ends at 1 for insertion);
            samples with ``s(x) <= 0`` then give NaN. Default: raw scores, as
            RISE uses raw class probabilities.
        max_batch_size: most perturbed images per forward call (at least one
            step of the whole batch is scored per call).
        seed: seed of the random tie-breaking order.

    Returns:
        ``(fractions, curves)``: ``(S + 1,)`` fractions of pixels perturbed
        and ``(B, S + 1)`` scores; rows are NaN for maps with NaN/inf.
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    _check_images(images)
    b, c, h, w = images.shape
    if maps.ndim == 4:
        maps = maps.sum(1)
    if maps.shape != (b, h, w):
        raise ValueError(
            f"maps of shape {tuple(maps.shape)} do not fit images of shape {tuple(images.shape)}"
        )
    n = h * w
    flat = maps.reshape(b, n)
    finite = _finite_rows(flat)
    flat = torch.where(finite[:, None], flat, torch.zeros_like(flat))
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=generator).to(flat.device)
    order = perm[flat[:, perm].argsort(dim=1, descending=True, stable=True)]
    position = torch.empty_like(order)
    position.scatter_(1, order, torch.arange(n, device=order.device).expand(b, n))

    ph, pw = _pair(patch_size)
    step = max(1, ph * pw)
    n_steps = math.ceil(n / step)
    counts = torch.clamp(torch.arange(n_steps + 1, device=images.device) * step, max=n)
    if baseline is None:
        baseline = "zeros" if mode == "deletion" else "blur"
    base = _baseline_images(images, baseline)
    args = _as_tuple(additional_forward_args)

    per_call = max(1, max_batch_size // b)
    chunks = []
    for start in range(0, n_steps + 1, per_call):
        k = counts[start : start + per_call]
        j = k.numel()
        perturbed = position[:, None, :] < k[None, :, None]  # (B, J, N)
        if mode == "insertion":
            perturbed = ~perturbed
        perturbed = perturbed.view(b, j, 1, h, w)
        batch = torch.where(perturbed, base[:, None], images[:, None]).reshape(b * j, c, h, w)
        scores = _scores(forward_func, batch, _repeat_args(args, b, j))
        chunks.append(scores.view(b, j))
    curves = torch.cat(chunks, 1)
    if normalize:
        reference = curves[:, 0] if mode == "deletion" else curves[:, -1]
        curves = torch.where(reference[:, None] > 0, curves / reference[:, None], math.nan)
    curves = torch.where(finite[:, None], curves, math.nan)
    fractions = counts.to(curves.dtype) / n
    return fractions, curves


def deletion_auc(
    forward_func: Callable[..., Tensor],
    images: Tensor,
    maps: Tensor,
    additional_forward_args: Any = None,
    patch_size: int | Sequence[int] = 16,
    baseline: Baseline = "zeros",
    normalize: bool = False,
    max_batch_size: int = 64,
    seed: int = 0,
) -> Tensor:
    r"""Deletion AUC (RISE, Petsiuk et al., 2018): area under the score curve as the
    most-attributed pixels are removed first.

    .. math::

        \mathrm{AUC}_{del} = \int_0^1 s\left(x \text{ with the top } f
        \text{ of pixels replaced by the baseline}\right) df

    computed with the trapezoidal rule over steps of one patch's worth of
    pixels (see :func:`perturbation_curve`). **Lower is better** (the score
    should collapse fast). Raw scores by default (``normalize=True`` divides by
    ``s(x)``).

    Args:
        forward_func: ``f(images, *additional_forward_args) -> (B,)`` scores.
        images: ``(B, C, H, W)`` model inputs.
        maps: ``(B, H, W)`` or ``(B, C, H, W)`` maps at the input resolution.
        additional_forward_args: per-sample extra arguments (e.g. token ids).
        patch_size: pixels per step as ``(ph, pw)``; pass the model's patch size.
        baseline: value of removed pixels (default ``"zeros"``; see
            :func:`perturbation_curve`).
        normalize: divide the curve by the unperturbed score.
        max_batch_size: most perturbed images per forward call.
        seed: seed of the random tie-breaking order.

    Returns:
        ``(B,)`` tensor; NaN where the map has NaN/inf.
    """
    fractions, curves = perturbation_curve(
        forward_func, images, maps, additional_forward_args, "deletion", patch_size,
        baseline, normalize, max_batch_size, seed,
    )
    return torch.trapezoid(curves, fractions, dim=1)


def insertion_auc(
    forward_func: Callable[..., Tensor],
    images: Tensor,
    maps: Tensor,
    additional_forward_args: Any = None,
    baseline: Baseline = "blur",
    **options: Any,
) -> Tensor:
    r"""Insertion AUC (RISE, Petsiuk et al., 2018): area under the score curve as the
    most-attributed pixels are revealed first on a baseline image.

    .. math::

        \mathrm{AUC}_{ins} = \int_0^1 s\left(\text{baseline with the top } f
        \text{ of pixels of } x\right) df

    computed with the trapezoidal rule over steps of one patch's worth of
    pixels (see :func:`perturbation_curve`). **Higher is better**. Raw scores
    by default (``normalize=True`` divides by ``s(x)``).

    Args are those of :func:`deletion_auc` (``patch_size``, ``normalize``,
    ``max_batch_size`` and ``seed`` by keyword), except ``baseline``: the
    image the pixels are inserted into (default ``"blur"``; see
    :func:`perturbation_curve`).

    Returns:
        ``(B,)`` tensor; NaN where the map has NaN/inf.
    """
    fractions, curves = perturbation_curve(
        forward_func, images, maps, additional_forward_args, "insertion", baseline=baseline,
        **options,
    )
    return torch.trapezoid(curves, fractions, dim=1)


# --- Captum wrappers ---------------------------------------------------------------------


def _expand_to_images(maps: Tensor, images: Tensor) -> Tensor:
    if maps.ndim == 3:
        maps = maps[:, None]
    return maps.expand_as(images).to(images.dtype)


def infidelity(
    forward_func: Callable[..., Tensor],
    images: Tensor,
    maps: Tensor,
    additional_forward_args: Any = None,
    perturb_func: Callable[..., tuple[Tensor, Tensor]] | None = None,
    noise_std: float = 0.05,
    n_perturb_samples: int = 10,
    max_examples_per_batch: int | None = None,
    normalize: bool = True,
    seed: int | None = 0,
) -> Tensor:
    r"""Explanation infidelity (Yeh et al., NeurIPS 2019) through
    :func:`captum.metrics.infidelity`.

    .. math::

        \mathrm{INFD} = \mathbb{E}_{I}\left[\left(I^\top M - (s(x) - s(x - I))\right)^2\right]

    with Gaussian perturbations ``I ~ N(0, noise_std^2)`` by default. With
    ``normalize=True`` (default) Captum rescales the map by the least-squares
    optimal factor first, so maps on different scales (MATEX's [0, 1] maps,
    raw gradients) are comparable. **Lower is better** (range ``[0, inf)``).

    Args:
        forward_func: ``f(images, *additional_forward_args) -> (B,)`` scores.
        images: ``(B, C, H, W)`` model inputs.
        maps: ``(B, H, W)``, ``(B, 1, H, W)`` (broadcast to every channel) or
            ``(B, C, H, W)`` attributions.
        additional_forward_args: per-sample extra arguments (expanded by Captum).
        perturb_func: Captum perturbation ``inputs -> (I, inputs - I)``;
            default Gaussian noise of ``noise_std``.
        noise_std: standard deviation of the default perturbation.
        n_perturb_samples: perturbations per sample.
        max_examples_per_batch: Captum's chunking of the perturbed batch.
        normalize: Captum's optimal rescaling of the attributions.
        seed: seed of the perturbation noise (``None``: global RNG); the global
            RNG state is restored afterwards.

    Returns:
        ``(B,)`` tensor.
    """
    _check_images(images)
    if perturb_func is None:

        def perturb_func(inputs: Tensor) -> tuple[Tensor, Tensor]:
            noise = torch.randn_like(inputs) * noise_std
            return noise, inputs - noise

    with seeded(seed, images.device):
        return captum_metrics.infidelity(
            forward_func,
            perturb_func,
            images,
            _expand_to_images(maps, images),
            additional_forward_args=additional_forward_args,
            n_perturb_samples=n_perturb_samples,
            max_examples_per_batch=max_examples_per_batch,
            normalize=normalize,
        )


def sensitivity_max(
    explanation_func: Callable[..., Tensor],
    images: Tensor,
    perturb_radius: float = 0.02,
    n_perturb_samples: int = 10,
    norm_ord: str = "fro",
    max_examples_per_batch: int | None = None,
    seed: int | None = 0,
    **kwargs: Any,
) -> Tensor:
    r"""Max-sensitivity (Yeh et al., NeurIPS 2019) through
    :func:`captum.metrics.sensitivity_max`.

    .. math::

        \mathrm{SENS} = \max_{\|\delta\|_\infty \le r}
            \frac{\|\Phi(x + \delta) - \Phi(x)\|}{\|\Phi(x)\|}

    estimated with ``n_perturb_samples`` uniform perturbations of radius
    ``perturb_radius`` (Captum's default perturbation; the change is
    normalised by the norm of the unperturbed explanation). **Lower is
    better** (range ``[0, inf)``).

    Args:
        explanation_func: ``explain(images, **kwargs)``, e.g.
            ``MATEX(model).attribute``.
        images: ``(B, C, H, W)`` model inputs.
        perturb_radius: L-infinity radius of the perturbations.
        n_perturb_samples: perturbations per sample.
        norm_ord: norm of the explanation difference (Captum's ``norm_ord``).
        max_examples_per_batch: Captum's chunking of the perturbed batch.
        seed: seed of the perturbations (``None``: global RNG); the global RNG
            state is restored afterwards.
        **kwargs: passed to ``explanation_func`` (e.g.
            ``additional_forward_args=(ids,)``; per-sample tensors are
            expanded by Captum).

    Returns:
        ``(B,)`` tensor.
    """
    _check_images(images)

    def explain(inputs: Any, **kw: Any) -> Tensor:
        # Captum hands the inputs over as a 1-tuple and expects a tuple back;
        # plain functions get (and may return) the tensor
        if isinstance(inputs, tuple) and len(inputs) == 1:
            out = explanation_func(inputs[0], **kw)
            return (out,) if isinstance(out, Tensor) else out
        return explanation_func(inputs, **kw)

    with seeded(seed, images.device):
        return captum_metrics.sensitivity_max(
            explain,
            images,
            perturb_radius=perturb_radius,
            n_perturb_samples=n_perturb_samples,
            norm_ord=norm_ord,
            max_examples_per_batch=max_examples_per_batch,
            **kwargs,
        )
