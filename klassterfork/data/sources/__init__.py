"""Annotation readers, one module per dataset, registered in `SOURCES`."""

from klassterfork.data.sources.base import SOURCES, Annotation, VideoEntry

__all__ = ["SOURCES", "Annotation", "VideoEntry"]
