"""Data: the synthetic chest-radiograph phantom, radiograph reading (PNG, JPEG, DICOM),
geometry-preserving preprocessing and the MS-CXR loader (a user's local copy)."""

from captum_matex.data.geometry import (
    Geometry,
    InputSpec,
    compute_geometry,
    input_spec,
    maps_to_original,
    prepare,
)
from captum_matex.data.images import ImageReadError, Radiograph, image_size, read_dicom, read_image
from captum_matex.data.mscxr import MSCXR, MSCXRError, MSCXRSample
from captum_matex.data.phantom import PhantomCXR, PhantomSample

__all__ = [
    "Geometry",
    "ImageReadError",
    "InputSpec",
    "MSCXR",
    "MSCXRError",
    "MSCXRSample",
    "PhantomCXR",
    "PhantomSample",
    "Radiograph",
    "compute_geometry",
    "image_size",
    "input_spec",
    "maps_to_original",
    "prepare",
    "read_dicom",
    "read_image",
]
