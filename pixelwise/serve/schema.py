"""Response shapes, for the OpenAPI schema at /openapi.json (the handlers build plain dicts)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    error: str = Field(description="What was wrong with the request, in one line.")


class ClassPixels(BaseModel):
    id: int
    name: str
    color: list[int] = Field(description="[r, g, b], 0..255")
    pixels: int = Field(description="Pixels predicted as this class (multi-label: pixels where it is present).")
    instances: int | None = Field(None, description="Panoptic / instance tasks: instances found of a thing class.")


class PngData(BaseModel):
    format: Literal["png"] = "png"
    encoding: Literal["index", "bits"] | None = Field(None, description=(
        "index: each pixel holds a class id (8-bit palette PNG; 16-bit greyscale past 256 classes); "
        "bits: 16-bit greyscale where bit c is set where class c is present (multi-label)."))
    data: str = Field(description="Base64 PNG.")


class Rle(BaseModel):
    size: list[int] = Field(description="[height, width]")
    counts: str = Field(description="COCO compressed RLE counts (column-major), as pycocotools writes them.")


class RleSegment(BaseModel):
    id: int = Field(description="Class id.")
    name: str
    area: int
    rle: Rle


class RleMask(BaseModel):
    format: Literal["rle"] = "rle"
    size: list[int] = Field(description="[height, width]")
    segments: list[RleSegment] = Field(description="One COCO RLE per class present (multi-label: they may overlap).")


class Segment(BaseModel):
    id: int = Field(description="Segment id (the value in segment_map).")
    class_id: int = Field(alias="class")
    name: str
    isthing: bool
    area: int
    score: float
    rle: Rle


class SegmentResponse(BaseModel):
    width: int
    height: int
    model: str
    task: str = Field(description="The task answered: semantic, panoptic, instance or multilabel.")
    classes: list[ClassPixels] = Field(default_factory=list, description="Every class with its pixel count.")
    mask: PngData | RleMask | None = Field(None, description="Semantic and multi-label tasks; panoptic (format=png): "
                                                             "each pixel's segment class, 255 where no segment.")
    segments: list[Segment] | None = Field(None, description="Panoptic and instance tasks.")
    segment_map: PngData | None = Field(None, description="Panoptic, format=png: segment ids per pixel, 0 = void.")
    ms: float = Field(description="Server time for this request, milliseconds.")
    overlay: PngData | None = Field(None, description="With ?overlay=1: the colour overlay as a PNG.")
    image: PngData | None = Field(None, description="For a multi-band model: the upload's RGB composite as a PNG "
                                  "(browsers cannot draw a multi-band TIFF).")


class ModelInfo(BaseModel):
    name: str
    arch: dict
    task: str = Field(description="The model's own task (the default of POST /v1/segment).")
    tasks: list[str] = Field(description="Tasks the model can answer (?task=...).")
    classes: list[str]
    palette: list[list[int]]
    things: list[int]
    preprocessing: dict
    limits: dict
