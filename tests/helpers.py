"""Assertions and test files shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
from torch import nn


def model_state(model: nn.Module) -> dict:
    """Everything an explainer must leave as it found it."""
    config = model.config.vision_config
    return {
        "training": {name: m.training for name, m in model.named_modules()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "attn": getattr(config, "_attn_implementation", None),
        "hooks": sum(
            len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
            + len(getattr(m, "_backward_pre_hooks", {}))
            for m in model.modules()
        ),
        "grads": [name for name, p in model.named_parameters() if p.grad is not None],
    }


def assert_valid_maps(maps: torch.Tensor, images: torch.Tensor) -> None:
    assert maps.shape == images.shape
    assert maps.dtype == images.dtype and maps.device == images.device
    assert maps.is_contiguous()
    assert torch.isfinite(maps).all() and (maps >= 0).all()
    assert (maps.flatten(1).amax(1) > 0).all(), "a map is all zero"


def write_dicom(path: Path, array: np.ndarray | None, photometric: str = "MONOCHROME2",
                bits_stored: int | None = None, syntax: str = ExplicitVRLittleEndian, **elements) -> Path:
    """A DICOM file holding ``array`` ((H, W) or (frames, H, W)); no pixel data for None."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = UID(syntax)
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    if array is not None:
        bits = bits_stored or array.dtype.itemsize * 8
        ds.set_pixel_data(array, photometric_interpretation=photometric, bits_stored=bits)
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path
