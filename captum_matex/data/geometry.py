r"""
Preprocessing that remembers its geometry.

A model sees a resized, cropped or padded copy of a radiograph; a map made on
that input grid must go back to the original pixel grid to be compared with
expert boxes, and boxes must go the other way to be drawn on the model
input. :func:`prepare` builds the model input from radiographs **and**
returns one :class:`Geometry` per image recording exactly what happened.

Every geometry here is an axis-aligned affine map between two continuous
pixel-edge coordinate systems (pixel ``(row, col)`` covers
``[col, col + 1) x [row, row + 1)``, the convention of ``(x, y, w, h)``
boxes and of :func:`captum_matex.metrics.boxes_to_mask`)::

    x_input = scale_x * x_original + offset_x
    y_input = scale_y * y_original + offset_y

A resize to ``(h', w')`` contributes ``scale = (h'/H, w'/W)`` (exact for
PIL and for ``torch.nn.functional.interpolate`` with
``align_corners=False``); a crop starting at ``(top, left)`` contributes
``offset = (-top, -left)``; padding by ``(pad_top, pad_left)`` contributes
``offset = (pad_top, pad_left)``.

Two modes:

- ``"letterbox"`` (default): scale the whole image to fit the model's input
  and pad the short side with black, centred. Nothing is lost. This is the
  better default for chest radiographs: centre cropping a portrait film cuts
  the apices and the costophrenic angles, exactly where pneumothorax and
  pleural effusion sit, and MS-CXR boxes there would fall outside the model
  input. A model trained only on centre crops sees black bars it never saw
  in training; compare both modes on a validation split when in doubt.
- ``"processor"``: reproduce a transformers CLIP image processor exactly
  (``size`` as ``{"shortest_edge"}`` or ``{"height", "width"}``,
  ``do_center_crop`` / ``crop_size``, the backend's crop rounding, its
  resampling filter, rescale and normalisation). Regions cropped away have
  no value in the model's map; :meth:`Geometry.map_to_original` gives them
  ``fill`` (0 by default) and :meth:`Geometry.visible_mask` tells which
  original pixels the model saw.

Pixels are resampled with ``torch`` (antialiased bicubic, as PIL does, on
any device); with ``quantize=True`` (default) they are rounded to 8 bits
before and after the resize as the PIL pipeline does, and match the
processor's own ``pixel_values`` to within one grey level.
``engine="processor"`` calls the processor itself instead, for bit-exact
inputs.
"""

# The public face of four modules, one job each, each importing only those named
# before it: _input_spec reads a processor's preprocessing, _resample resamples
# maps between grids, _affine holds the Geometry record (made by
# compute_geometry; it moves boxes and maps), _prepare builds the pixels.
from captum_matex.data._affine import Geometry, compute_geometry, maps_to_original
from captum_matex.data._input_spec import InputSpec, input_spec
from captum_matex.data._prepare import prepare

__all__ = [
    "Geometry",
    "InputSpec",
    "compute_geometry",
    "input_spec",
    "maps_to_original",
    "prepare",
]
