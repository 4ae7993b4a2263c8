"""Request and response bodies of the image routes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class StepReport(BaseModel):
    op: str = Field(description="The op that ran.")
    values: dict[str, Any] = Field(description="Numbers the op produced (empty for pure ops).")
    ms: float = Field(description="Time spent in the op inside the worker, in milliseconds.")


class ImageResult(BaseModel):
    """What an image op or pipeline returns as JSON."""

    shape: list[int] = Field(description="Shape of the resulting array, numpy order (H, W[, C]).")
    dtype: str = Field(description="numpy dtype of the resulting array.")
    min: float | None = Field(description="null when every value is NaN.")
    max: float | None
    mean: float | None
    values: dict[str, Any] = Field(description="The last step's numbers (e.g. a histogram).")
    steps: list[StepReport]
    timings_ms: dict[str, float] = Field(description="decode, ops, encode and total, in ms.")
    png_base64: str | None = Field(
        None, description="The resulting image as PNG, base64 (absent with include_image=false)."
    )


class SampleInfo(BaseModel):
    name: str
    shape: list[int]
    dtype: str
    description: str


class OpInfo(BaseModel):
    name: str
    summary: str
    params: dict[str, Any] = Field(description="JSON schema of the op's parameters.")
