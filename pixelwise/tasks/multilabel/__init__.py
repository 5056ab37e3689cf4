"""The multi-label task: overlapping classes, a sigmoid per class (a pixel may be road *and* wet)."""
from pixelwise.tasks.multilabel.task import MultiLabelTask

__all__ = ["MultiLabelTask"]
