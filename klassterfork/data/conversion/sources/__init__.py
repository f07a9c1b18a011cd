"""Annotation readers, one module per dataset, registered in `SOURCES`."""

from klassterfork.data.conversion.sources import (  # noqa: F401  (registers the readers)
    csv_list,
    frame_list,
    hmdb51,
    json_list,
    kinetics,
    ssv2,
    synthetic,
    ucf101,
)
from klassterfork.data.conversion.sources.base import SOURCES, Annotation, VideoEntry

__all__ = ["SOURCES", "Annotation", "VideoEntry"]
