"""Training the notes' small PyTorch models (serving them is :mod:`workers.serving`).

Spiral classification and cubic regression, as in the notes: configurations
(:mod:`.configs`), datasets (:mod:`.datasets`), networks (:mod:`.models`), the
training loop (:mod:`.trainer`), the model store (:mod:`.checkpoints`), the job
store (:mod:`.jobs`), and plots (:mod:`.plots`).
"""

from workers.training.checkpoints import (
    ModelInfo,
    ModelRef,
    ModelStore,
    RegisteredModel,
    validate_model_id,
)
from workers.training.configs import (
    DEFAULT_LIMITS,
    AdamSpec,
    ModelSpec,
    RegressionConfig,
    RegressionData,
    RegressionModelSpec,
    SGDSpec,
    SpiralConfig,
    SpiralData,
    TrainingConfig,
    TrainingLimits,
    validate_training,
)
from workers.training.datasets import make_cubic, make_spiral
from workers.training.jobs import INTERRUPTED, Job, JobEvent, JobsPage, JobStatus, JobStore
from workers.training.models import Ensemble, build_model, io_features
from workers.training.plots import (
    curves_png,
    dataset_png,
    decision_boundary_png,
    regression_fit_png,
)
from workers.training.trainer import (
    Progress,
    TrainingCancelled,
    TrainingDiverged,
    TrainResult,
    build_metadata,
    resolve_device,
    train,
)

__all__ = [
    "DEFAULT_LIMITS",
    "INTERRUPTED",
    "AdamSpec",
    "Ensemble",
    "Job",
    "JobEvent",
    "JobStatus",
    "JobStore",
    "JobsPage",
    "ModelInfo",
    "ModelRef",
    "ModelSpec",
    "ModelStore",
    "Progress",
    "RegisteredModel",
    "RegressionConfig",
    "RegressionData",
    "RegressionModelSpec",
    "SGDSpec",
    "SpiralConfig",
    "SpiralData",
    "TrainResult",
    "TrainingCancelled",
    "TrainingConfig",
    "TrainingDiverged",
    "TrainingLimits",
    "build_metadata",
    "build_model",
    "curves_png",
    "dataset_png",
    "decision_boundary_png",
    "io_features",
    "make_cubic",
    "make_spiral",
    "regression_fit_png",
    "resolve_device",
    "train",
    "validate_model_id",
    "validate_training",
]
