"""A label map as a DICOM Segmentation (SEG, highdicom) that references the CT series it was written with.

One segment per label value present (named by the label table: ``left_upper``, ``lesion_1``, ...), binary
frames, one per CT slice in the series' order, so viewers (and `highdicom.seg.segread`) overlay it on the
CT. Like the CT series it says SYNTHETIC and copies nothing that identifies anyone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from medgen.io.nifti import reorient
from medgen.volume import Volume

SEG_NAME = "segmentation.dcm"


def _codes(name: str):
    """(category, type) SNOMED codes for a layout label."""
    from pydicom.sr.codedict import codes

    if name.startswith("lesion"):
        return codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Lesion
    if name == "effusion":
        return codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.PleuralEffusion
    if name == "emphysema":
        return codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.MorphologicallyAbnormalStructure
    typed = {"bone": codes.SCT.Bone, "airway": codes.SCT.Trachea, "mediastinum": codes.SCT.Mediastinum,
             "heart": codes.SCT.Heart}
    if name in typed:
        return codes.SCT.AnatomicalStructure, typed[name]
    if name.startswith(("left_", "right_")) or name == "lung":
        return codes.SCT.AnatomicalStructure, codes.SCT.Lung
    return codes.SCT.Tissue, codes.SCT.Tissue


def write_dicom_seg(labels: Volume, ct_files: list[Path], out_path, label_table: dict[str, int]) -> Path:
    """Write `labels` (on the CT's grid) as a SEG referencing the CT slices `ct_files` (slice 1 first, as
    `medgen.io.dicom.write_dicom_series` returns them).

    Raises:
        ValueError: a label value missing from `label_table`, or a label map on another grid.
    """
    import highdicom as hd

    from medgen._version import __version__

    names = {int(v): k for k, v in label_table.items()}
    lps = reorient(labels, "LPS")
    frames = np.ascontiguousarray(np.asarray(lps.array).transpose(2, 1, 0))  # (slice k, row j, column i)
    source = [pydicom.dcmread(f) for f in ct_files]
    if frames.shape != (len(source), int(source[0].Rows), int(source[0].Columns)):
        raise ValueError(f"the label map {frames.shape} (slices, rows, columns) is not on the CT series' grid "
                         f"({len(source)}, {source[0].Rows}, {source[0].Columns})")
    values = [int(v) for v in np.unique(frames) if v > 0]
    if not values:
        raise ValueError("the label map is empty (no label > 0): there is nothing to segment")
    unknown = [v for v in values if v not in names]
    if unknown:
        raise ValueError(f"label value(s) {unknown} are not in the label table")
    remapped = np.zeros(frames.shape, dtype=np.uint8)
    for number, value in enumerate(values, start=1):
        remapped[frames == value] = number
    algorithm = hd.AlgorithmIdentificationSequence(name="medgen layout", version=__version__,
                                                   family=pydicom.sr.codedict.codes.DCM.ArtificialIntelligence)
    descriptions = []
    for number, value in enumerate(values, start=1):
        category, kind = _codes(names[value])
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=names[value][:64], segmented_property_category=category,
            segmented_property_type=kind, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm))
    seg = hd.seg.Segmentation(
        source_images=source, pixel_array=remapped, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=2, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="medgen", manufacturer_model_name="medgen synthetic CT",
        software_versions=__version__, device_serial_number="SYNTHETIC", series_description="SYNTHETIC medgen layout",
    )
    out_path = Path(out_path)
    seg.save_as(out_path)
    return out_path
