"""seglab: from a CVAT segmentation export to a trained, measured, deployable model."""

__version__ = "0.1.0"
