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
    pixels: int = Field(description="Pixels predicted as this class.")


class PngData(BaseModel):
    format: Literal["png"] = "png"
    data: str = Field(description="Base64 PNG. For the mask: 8-bit palette PNG of class ids "
                                  "(16-bit greyscale when there are more than 256 classes).")


class Rle(BaseModel):
    size: list[int] = Field(description="[height, width]")
    counts: str = Field(description="COCO compressed RLE counts (column-major), as pycocotools writes them.")


class RleSegment(BaseModel):
    id: int = Field(description="Class id.")
    rle: Rle


class RleMask(BaseModel):
    format: Literal["rle"] = "rle"
    size: list[int] = Field(description="[height, width]")
    segments: list[RleSegment] = Field(description="One COCO RLE per class present in the image.")


class PanopticSegment(BaseModel):
    id: int
    class_id: int = Field(alias="class")
    name: str
    area: int
    rle: Rle


class SegmentResponse(BaseModel):
    width: int
    height: int
    model: str
    classes: list[ClassPixels] = Field(default_factory=list, description="Every class with its pixel count.")
    mask: PngData | RleMask | None = None
    segments: list[PanopticSegment] | None = Field(None, description="task=panoptic only.")
    ms: float = Field(description="Server time for this request, milliseconds.")
    overlay: PngData | None = Field(None, description="With ?overlay=1: the colour overlay as a PNG.")


class ModelInfo(BaseModel):
    name: str
    arch: dict
    classes: list[str]
    palette: list[list[int]]
    preprocessing: dict
    tasks: list[str]
    limits: dict
