"""Assertions and test files shared by several test modules."""

from __future__ import annotations

import struct
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


#: explicit VRs whose length field is 4 bytes (after 2 reserved bytes), PS3.5 7.1.2
LONG_LENGTH_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


def element_at(data: bytes, tag: int, implicit: bool = False, little: bool = True) -> tuple[int, slice]:
    """Offset of the first element ``tag`` after the preamble of DICOM file bytes
    ``data``, and where its value length field lies (2 or 4 bytes)."""
    at = data.index(struct.pack("<HH" if little else ">HH", tag >> 16, tag & 0xFFFF), 132)
    if implicit:
        return at, slice(at + 4, at + 8)
    if data[at + 4:at + 6] in LONG_LENGTH_VRS:
        return at, slice(at + 8, at + 12)
    return at, slice(at + 6, at + 8)


def with_length(data: bytes, tag: int, length: int, implicit: bool = False) -> bytes:
    """Little endian DICOM file bytes ``data`` with element ``tag``'s declared
    value length replaced by ``length`` (which must fit its length field)."""
    _, field = element_at(data, tag, implicit)
    size = field.stop - field.start
    return data[:field.start] + length.to_bytes(size, "little") + data[field.stop:]
