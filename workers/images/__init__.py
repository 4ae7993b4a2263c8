"""Image side of tensorlens: decoding, the op registry, pipelines and plots.

Pure numpy/scikit-image code with no web framework in sight; the HTTP layer calls
:func:`run_pipeline` and :func:`run_plot` through the worker pool.
"""

from workers.images.codec import SUPPORTED_FORMATS, decode_image, encode_png, summarize
from workers.images.ops import (
    OPS,
    Op,
    StepResult,
    apply_op,
    describe_ops,
    get_op,
    parse_params,
)
from workers.images.pipeline import (
    PLOT_KINDS,
    ImageSource,
    PipelineResult,
    PlotKind,
    run_pipeline,
    run_plot,
)
from workers.images.plots import contrast_report_png, histogram_png
from workers.images.samples import SAMPLE_NAMES, SampleInfo, list_samples, load_sample

__all__ = [
    "OPS",
    "PLOT_KINDS",
    "SAMPLE_NAMES",
    "SUPPORTED_FORMATS",
    "ImageSource",
    "Op",
    "PipelineResult",
    "PlotKind",
    "SampleInfo",
    "StepResult",
    "apply_op",
    "contrast_report_png",
    "decode_image",
    "describe_ops",
    "encode_png",
    "get_op",
    "histogram_png",
    "list_samples",
    "load_sample",
    "parse_params",
    "run_pipeline",
    "run_plot",
    "summarize",
]
