r"""Register the chest atlas to each film before its prior is used.

The atlas of :class:`~captum_matex.stages.anatomy.AnatomicalPrior` sits at
fixed image coordinates; a film that is rotated, shifted, zoomed or put on a
portrait or landscape canvas moves the anatomy away from it.
:class:`AtlasRegistration` finds the lung fields on the film itself (dark
regions enclosed by the brighter body, from intensity alone) and fits the
similarity-plus-aspect transform that carries the atlas's lung fields onto
them: the centroid of both lungs fixes the shift, the line through the two
lungs' centroids the rotation and the width, their vertical spread the
height. The anatomical prior is then warped by that transform. Where no
plausible pair of lung fields is found (the film is not a frontal chest
radiograph as the phantom draws it, or the fit asks for a large rotation or
zoom), the prior is left as it is.

On real films the intensity-only lung fields can miss the lower lungs
(brightened by overlying soft tissue): on the PA film RG1_UNCI the fit moves
the atlas's bases about 40 of 224 rows above the film's. Give the
registration a lung segmenter (``AtlasRegistration(fields=...)``, with
``overlying=()`` for whole-lung masks) or leave such films unregistered
(``registration=None``); method page.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_matex.stages._atlas import ChestAtlas
from captum_matex.stages.anatomy import AnatomicalPrior

_LUNGS = ("left lung", "right lung")
#: Atlas regions that overlie the lungs and are bright on a film (the film's
#: dark lung fields stop at them).
_OVERLYING = ("heart", "mediastinum")
#: Plausible lung fields cover at most this share of the film ...
_MAX_AREA = 0.6
#: ... and are solid (see :func:`_solidity`; phantom films: about 0.9).
_MIN_SOLIDITY = 0.6


def _otsu(grey: Tensor, bins: int = 64) -> Tensor:
    r"""Otsu's threshold (between-class variance maximised) of each ``(H, W)``
    image of a ``(B, H, W)`` batch, as ``(B, 1, 1)``."""
    thresholds = []
    for values in grey.flatten(1):
        low, high = values.min(), values.max()
        span = (high - low).clamp_min(torch.finfo(values.dtype).tiny)
        hist = torch.histc(values, bins=bins, min=float(low), max=float(low + span))
        centres = low + (torch.arange(bins, dtype=values.dtype, device=values.device) + 0.5) * span / bins
        weight, mass = hist.cumsum(0), (hist * centres).cumsum(0)
        share = weight / weight[-1]
        mean_low = mass / weight.clamp_min(1)
        mean_high = (mass[-1] - mass) / (weight[-1] - weight).clamp_min(1)
        between = share * (1 - share) * (mean_low - mean_high) ** 2
        thresholds.append(centres[between[:-1].argmax()])
    return torch.stack(thresholds)[:, None, None]


def lung_fields(images: Tensor) -> Tensor:
    r"""Dark regions enclosed by the body: pixels below the body threshold
    (Otsu) that lie inside the body's extent along both their row and their
    column.

    Args:
        images (Tensor): ``(B, C, H, W)`` films, or one ``(C, H, W)`` film.

    Returns:
        Tensor: 0/1 masks, ``(B, H, W)`` (or ``(H, W)`` for one film).
    """
    single = images.dim() == 3
    grey = (images[None] if single else images).float().mean(1)
    body = grey > _otsu(grey)
    rows = torch.arange(grey.shape[-1], device=grey.device)
    cols = torch.arange(grey.shape[-2], device=grey.device)[:, None]

    def between_ends(mask: Tensor, index: Tensor, dim: int) -> Tensor:
        big = max(grey.shape[-2:])
        first = torch.where(mask, index, big).amin(dim, keepdim=True)
        last = torch.where(mask, index, -1).amax(dim, keepdim=True)
        return (index >= first) & (index <= last)

    enclosed = between_ends(body, rows, -1) & between_ends(body, cols, -2)
    fields = (enclosed & ~body).float()
    return fields[0] if single else fields


def _solidity(masks: Tensor) -> Tensor:
    r"""Share of each mask's pixels whose 3 x 3 neighbourhood lies inside it,
    ``(B,)``: near 1 for solid fields, low for scattered dark pixels."""
    eroded = -F.max_pool2d(-masks[:, None], 3, stride=1, padding=1)[:, 0]
    return eroded.sum((1, 2)) / masks.sum((1, 2)).clamp_min(1)


def _frames(masks: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    r"""Centre ``(B, 2)`` (x, y), angle, width and height ``(B,)`` in pixels of
    the pair of lung fields in each ``(B, H, W)`` mask, and whether the mask
    holds such a pair (at least a quarter of its pixels on either side of
    its centre)."""
    m = masks.double()
    ys = torch.arange(m.shape[1], dtype=m.dtype, device=m.device)[:, None].expand_as(m[0])
    xs = torch.arange(m.shape[2], dtype=m.dtype, device=m.device)[None, :].expand_as(m[0])

    def centroid(weights: Tensor) -> tuple[Tensor, Tensor]:
        mass = weights.sum((1, 2))
        safe = mass.clamp_min(1)
        return torch.stack([(weights * xs).sum((1, 2)), (weights * ys).sum((1, 2))], 1) / safe[:, None], mass

    centre, area = centroid(m)
    left = m * (xs < centre[:, :1, None])
    (c_left, n_left), (c_right, n_right) = centroid(left), centroid(m - left)
    axis = c_right - c_left
    width = axis.norm(dim=1)
    angle = torch.atan2(axis[:, 1], axis[:, 0])
    across = (ys - centre[:, 1, None, None]) * torch.cos(angle)[:, None, None] - (
        xs - centre[:, 0, None, None]) * torch.sin(angle)[:, None, None]
    height = ((m * across**2).sum((1, 2)) / (area - 1).clamp_min(1)).sqrt()
    valid = (area >= 16) & (torch.minimum(n_left, n_right) >= 0.25 * area)
    return centre, angle, width, height, valid


def _rotation(angle: Tensor) -> Tensor:
    cos, sin = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


def _pixel_affines(film: tuple, atlas: tuple) -> Tensor:
    r"""``(B, 2, 3)`` maps of film pixel coordinates to atlas pixel coordinates."""
    (c_f, a_f, w_f, h_f), (c_a, a_a, w_a, h_a) = film, atlas
    scale = torch.diag_embed(torch.stack([w_a / w_f, h_a / h_f], -1))
    linear = _rotation(a_a.expand_as(a_f)) @ scale @ _rotation(-a_f)
    shift = c_a - (linear @ c_f[..., None])[..., 0]
    return torch.cat([linear, shift[..., None]], -1)


def default_registration(anatomical_prior: object) -> "AtlasRegistration | None":
    r"""The registration MATEX and the prior-only row use with this anatomical
    prior stage: its own atlas, registered, for an
    :class:`~captum_matex.stages.anatomy.AnatomicalPrior`; ``None`` for any
    other stage (its coordinates are unknown)."""
    if isinstance(anatomical_prior, AnatomicalPrior):
        return AtlasRegistration(anatomical_prior.atlas)
    return None


def register_unmasked(registration: object, prior: Tensor, images: Tensor,
                      grid: tuple[int, int], masks: object = None) -> Tensor:
    r"""``registration(prior, images, grid)`` on the samples whose prior came
    from the atlas; a sample with its own region mask (already on the film)
    keeps it."""
    if registration is None:
        return prior
    if masks is None:
        return registration(prior, images, grid)
    own = [mask is not None for mask in (masks.unbind(0) if isinstance(masks, Tensor) else masks)]
    if all(own):
        return prior
    registered = registration(prior, images, grid)
    keep = torch.tensor(own, device=prior.device)[:, None]
    return torch.where(keep, prior, registered)


class AtlasRegistration:
    r"""Warp an atlas prior onto each film's own lung fields.

    Args:
        atlas (ChestAtlas, optional): the atlas the prior was rendered from
            (its lung fields are matched to the film's). Default: the
            built-in :class:`~captum_matex.stages.anatomy.ChestAtlas`
        max_angle (float, optional): largest rotation in degrees accepted;
            beyond it the prior is left unregistered. Default: 20
        max_zoom (float, optional): largest factor by which the film's lung
            fields may be wider, narrower, taller or shorter than the
            atlas's. The phantom's lungs are squat against the built-in
            atlas's clinical proportions (height 0.54-0.90 of it, width
            0.73-1.03, on the first 1000 test films of seed 4): a limit of
            1.6 leaves 11% of them unregistered (39% of 2000 with the
            atlas's earlier egg-shaped lungs), with the prior's bases below
            the film's diaphragm. Default: 2.5
        min_area (float, optional): smallest share of the film the lung
            fields must cover. Default: 0.03
        fields (callable, optional): finds the lung fields of ``(B, C, H,
            W)`` films as ``(B, H, W)`` masks in [0, 1], e.g. a lung
            segmentation model's output. Default: :func:`lung_fields`
            (intensity alone; it can miss a real film's lower lungs, see the
            method page)
        overlying (sequence of str, optional): atlas regions taken out of
            its lungs before they are matched to the film's fields: those
            the fields do not show. Dark lung fields lack the lung behind the
            heart and mediastinum (the default); pass ``()`` when ``fields``
            gives whole lungs, as many lung segmenters do, or the fit is
            biased (the atlas's own lungs moved by a known zoom and shift
            and given as whole-lung fields: Dice of the registered lungs with
            the moved ones 0.88 with the default, 0.999 with ``()``).
            Default: ``("heart", "mediastinum")``

    Examples::

        >>> registration = AtlasRegistration()
        >>> warped = registration(prior, images, grid=(14, 14))  # (B, h * w)
    """

    def __init__(self, atlas: ChestAtlas | None = None, max_angle: float = 20.0,
                 max_zoom: float = 2.5, min_area: float = 0.03,
                 fields: Callable[[Tensor], Tensor] = lung_fields,
                 overlying: Sequence[str] = _OVERLYING) -> None:
        if max_angle <= 0 or max_zoom <= 1 or not 0 <= min_area < 1:
            raise ValueError(
                f"need max_angle > 0, max_zoom > 1 and 0 <= min_area < 1, got "
                f"{max_angle}, {max_zoom}, {min_area}"
            )
        self.atlas = ChestAtlas() if atlas is None else atlas
        self.max_angle = max_angle
        self.max_zoom = max_zoom
        self.min_area = min_area
        self.fields = fields
        self.overlying = tuple(overlying)
        self._frames: dict[tuple[int, int], tuple | None] = {}

    def transforms(self, images: Tensor) -> tuple[Tensor, Tensor]:
        r"""The ``(B, 2, 3)`` maps of film pixel coordinates ``(x, y)`` to atlas
        pixel coordinates on the same canvas, and ``(B,)`` whether each film
        gives a plausible fit (where it does not, its map is meaningless).

        Args:
            images (Tensor): ``(B, C, H, W)`` films.
        """
        lungs = self.fields(images.detach()).float()
        if lungs.shape != (len(images), *images.shape[-2:]):
            raise ValueError(f"fields must give (B, H, W) masks of the films' size, got "
                             f"{tuple(lungs.shape)} for films of shape {tuple(images.shape)}")
        centre, angle, width, height, paired = _frames(lungs)
        atlas = self._atlas_frame(tuple(images.shape[-2:]), lungs.device)
        if atlas is None:
            return torch.zeros(len(images), 2, 3, dtype=torch.float64), torch.zeros(len(images), dtype=torch.bool)
        area = lungs.mean((1, 2))
        zooms = torch.stack([width / atlas[2], height / atlas[3]], 1)
        plausible = (
            paired & (area >= self.min_area) & (area <= _MAX_AREA)
            & (_solidity(lungs) >= _MIN_SOLIDITY)
            & (torch.rad2deg((angle - atlas[1]).abs()) <= self.max_angle)
            & ((zooms >= 1 / self.max_zoom) & (zooms <= self.max_zoom)).all(1)
        )
        film = (centre, angle, width.clamp_min(1), height.clamp_min(1))
        return _pixel_affines(film, atlas), plausible

    def _atlas_frame(self, size: tuple[int, int], device: torch.device) -> tuple | None:
        r"""The frame of the atlas's lung fields as the film's fields show them
        (the ``overlying`` regions taken out), cached per canvas size."""
        if size not in self._frames:
            visible = self.atlas.render(list(_LUNGS), size)
            for region in self.overlying:
                visible = visible * (1 - self.atlas.render([region], size))
            *frame, valid = _frames((visible > 0.5).float()[None])
            self._frames[size] = tuple(f[0] for f in frame) if bool(valid[0]) else None
        frame = self._frames[size]
        return None if frame is None else tuple(f.to(device) for f in frame)

    def __call__(self, prior: Tensor, images: Tensor, grid: tuple[int, int]) -> Tensor:
        r"""
        Args:
            prior (Tensor): ``(B, h * w)`` prior on the patch grid, peak 1.
            images (Tensor): ``(B, C, H, W)`` the films the prior is for.
            grid (tuple[int, int]): ``(h, w)`` patch grid.

        Returns:
            Tensor: ``(B, h * w)`` prior, warped onto each film with a fit
            (peak 1), unchanged on the others.
        """
        if prior.shape[0] == 0:
            return prior
        affines, plausible = self.transforms(images)
        height, width = images.shape[-2:]
        to_pixels = torch.tensor([[width / 2, 0, (width - 1) / 2], [0, height / 2, (height - 1) / 2],
                                  [0, 0, 1]], dtype=torch.float64, device=affines.device)
        full = torch.cat([affines, to_pixels[2:].expand(len(affines), 1, 3)], 1)
        theta = (torch.linalg.inv(to_pixels) @ full @ to_pixels)[:, :2].to(prior)
        maps = prior.view(-1, 1, *grid)
        points = F.affine_grid(theta, list(maps.shape), align_corners=False)
        warped = F.grid_sample(maps, points, mode="bilinear", padding_mode="zeros",
                               align_corners=False).flatten(1)
        peak = warped.amax(1, keepdim=True)
        keep = plausible.to(prior.device)[:, None] & (peak > 0)
        return torch.where(keep, warped / peak.clamp_min(torch.finfo(prior.dtype).tiny), prior)
