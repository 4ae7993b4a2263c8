"""Training configurations: what to generate, what to build, how to train it.

A configuration is a pydantic model discriminated by ``task`` (``"spiral"`` or
``"regression"``). The defaults reproduce the notes: a 3-class spiral of 1000 points
per class with noise 0.2 and seed 12345, and the cubic ``y = x**3 + 0.3 * U(0, 1)``
over 100 points with seed 1.

The schema bounds come from :data:`DEFAULT_LIMITS`, the hard ceilings the service
can only tighten: :func:`validate_training` checks a raw payload against the schema
and then against the limits it is given, and names the offending field by its dotted
path either way.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from workers.errors import InvalidParameter

__all__ = [
    "DEFAULT_LIMITS",
    "MAX_CLASSES",
    "MAX_SEED",
    "AdamSpec",
    "ModelSpec",
    "OptimizerSpec",
    "RegressionConfig",
    "RegressionData",
    "RegressionModelSpec",
    "SGDSpec",
    "SpiralConfig",
    "SpiralData",
    "TrainingConfig",
    "TrainingLimits",
    "validate_training",
]


class TrainingLimits(BaseModel):
    """Upper bounds on the size of one training job.

    The defaults are the ceilings written into the configuration schema; a service
    passes tighter values from its settings to :func:`validate_training`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_epochs: int = Field(100_000, ge=1, le=100_000)
    max_points: int = Field(1_000_000, ge=1, le=1_000_000)
    max_hidden_units: int = Field(4096, ge=1, le=4096)
    max_layers: int = Field(16, ge=0, le=16)
    max_ensemble: int = Field(64, ge=1, le=64)


DEFAULT_LIMITS = TrainingLimits()
_L = DEFAULT_LIMITS

MAX_CLASSES = 64
# Seeds travel through JSON and JavaScript clients: stay well inside 2**53.
MAX_SEED = 2**32 - 1
_MAX_ABS_X = 1e3

Activation = Literal["relu", "tanh", "sigmoid", "identity"]
Device = Literal["auto", "cpu", "cuda"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SpiralData(_Spec):
    """C interleaved spiral arms in the plane, N points each (the notes' dataset)."""

    points_per_class: int = Field(1000, ge=1, le=_L.max_points, description="N in the notes.")
    classes: int = Field(3, ge=2, le=MAX_CLASSES, description="C in the notes.")
    noise: float = Field(0.2, ge=0.0, le=10.0, description="Std of the angular noise.")
    seed: int = Field(12345, ge=0, le=MAX_SEED)


class RegressionData(_Spec):
    """``y = x**3 + noise * U(0, 1)`` on ``n_points`` evenly spaced x (the notes' cubic)."""

    n_points: int = Field(100, ge=2, le=_L.max_points)
    x_min: float = Field(-1.0, ge=-_MAX_ABS_X, le=_MAX_ABS_X)
    x_max: float = Field(1.0, ge=-_MAX_ABS_X, le=_MAX_ABS_X)
    noise: float = Field(0.3, ge=0.0, le=100.0, description="Scale of the uniform noise.")
    seed: int = Field(1, ge=0, le=MAX_SEED)
    eval_x_min: float = Field(
        -2.0, ge=-_MAX_ABS_X, le=_MAX_ABS_X, description="Range the fit is evaluated over."
    )
    eval_x_max: float = Field(2.0, ge=-_MAX_ABS_X, le=_MAX_ABS_X)

    @model_validator(mode="after")
    def _ranges_increase(self) -> RegressionData:
        if not self.x_min < self.x_max:
            raise ValueError("x_min must be less than x_max")
        if not self.eval_x_min < self.eval_x_max:
            raise ValueError("eval_x_min must be less than eval_x_max")
        return self


HiddenUnits = Annotated[int, Field(ge=1, le=_L.max_hidden_units)]


class ModelSpec(_Spec):
    """A fully connected network: ``Linear`` layers with ``activation`` between them.

    ``hidden=[100]`` with ``identity`` is the notes' linear model (two ``Linear``
    layers, nothing between them); with ``relu`` it is the two-layer network.
    """

    hidden: list[HiddenUnits] = Field(default_factory=lambda: [100], max_length=_L.max_layers)
    activation: Activation = "relu"


class RegressionModelSpec(ModelSpec):
    """A network, or an ensemble of ``ensemble_size`` independently initialised ones."""

    ensemble_size: int = Field(1, ge=1, le=_L.max_ensemble)


class SGDSpec(_Spec):
    """Stochastic gradient descent with optional momentum."""

    name: Literal["sgd"] = "sgd"
    lr: float = Field(1e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(1e-5, ge=0.0, le=1.0)
    momentum: float = Field(0.0, ge=0.0, lt=1.0)


class AdamSpec(_Spec):
    """Adam with L2 weight decay, as in the notes."""

    name: Literal["adam"] = "adam"
    lr: float = Field(1e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(1e-5, ge=0.0, le=1.0)


OptimizerSpec = Annotated[SGDSpec | AdamSpec, Field(discriminator="name")]


class _Training(_Spec):
    model_name: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9-]{0,63}$",
        description="The name the trained model registers under, as its next version;"
        " without one, the job's id is the name (version 1).",
    )
    description: str | None = Field(
        None, max_length=1000, description="What the model is for; kept with its version."
    )
    optimizer: OptimizerSpec = Field(default_factory=AdamSpec)
    epochs: int = Field(1000, ge=1, le=_L.max_epochs)
    batch_size: int | None = Field(
        None, ge=1, le=_L.max_points, description="Rows per step; null trains full batch."
    )
    device: Device = "auto"
    report_every: int = Field(10, ge=1, le=_L.max_epochs, description="Epochs between reports.")


class SpiralConfig(_Training):
    """Classify the points of a spiral by arm."""

    task: Literal["spiral"] = "spiral"
    data: SpiralData = Field(default_factory=SpiralData)
    model: ModelSpec = Field(default_factory=ModelSpec)
    loss: Literal["cross_entropy"] = "cross_entropy"


class RegressionConfig(_Training):
    """Fit the noisy cubic, with one network or an ensemble."""

    task: Literal["regression"] = "regression"
    data: RegressionData = Field(default_factory=RegressionData)
    model: RegressionModelSpec = Field(default_factory=RegressionModelSpec)
    loss: Literal["mse", "l1", "smooth_l1"] = "mse"


TrainingConfig = Annotated[SpiralConfig | RegressionConfig, Field(discriminator="task")]

_ADAPTER: TypeAdapter[SpiralConfig | RegressionConfig] = TypeAdapter(TrainingConfig)


def validate_training(
    raw: dict[str, Any], limits: TrainingLimits = DEFAULT_LIMITS
) -> SpiralConfig | RegressionConfig:
    """Validate a raw training configuration against the schema and ``limits``.

    Parameters
    ----------
    raw : dict
        The configuration as decoded from JSON; ``task`` selects the variant.
    limits : TrainingLimits
        Bounds on the job's size; only tighter than :data:`DEFAULT_LIMITS` matters.

    Returns
    -------
    SpiralConfig or RegressionConfig

    Raises
    ------
    InvalidParameter
        Naming the first offending field by its dotted path, e.g. ``model.hidden.0``.
    """
    try:
        config = _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        path = _path_in_payload(error["loc"], raw)
        if error["type"] in ("union_tag_not_found", "union_tag_invalid"):
            path.append(str(error["ctx"]["discriminator"]).strip("'"))
        raise InvalidParameter(".".join(path) or "config", error["msg"]) from None
    _check_limits(config, limits)
    return config


def _path_in_payload(loc: tuple[int | str, ...], raw: Any) -> list[str]:
    # A discriminated union puts the chosen tag into the error location, a level the
    # client's payload does not have: keep only the steps that exist in the payload.
    path: list[str] = []
    node = raw
    for part in loc:
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and part < len(node)
        if in_dict or in_list:
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and part in _TAGS:
            continue
        else:
            node = None
        path.append(str(part))
    return path


_TAGS = frozenset({"spiral", "regression", "sgd", "adam"})


def _check_limits(config: SpiralConfig | RegressionConfig, limits: TrainingLimits) -> None:
    def at_most(field: str, value: int, limit: int, what: str) -> None:
        if value > limit:
            raise InvalidParameter(field, f"{what} {value} is over the limit of {limit}")

    at_most("epochs", config.epochs, limits.max_epochs, "epochs")
    at_most("report_every", config.report_every, limits.max_epochs, "report interval")
    if isinstance(config, SpiralConfig):
        points = config.data.points_per_class * config.data.classes
        at_most("data.points_per_class", points, limits.max_points, "points in all")
    else:
        at_most("data.n_points", config.data.n_points, limits.max_points, "points")
        at_most(
            "model.ensemble_size", config.model.ensemble_size, limits.max_ensemble, "ensemble size"
        )
    if config.batch_size is not None:
        at_most("batch_size", config.batch_size, limits.max_points, "batch size")
    at_most("model.hidden", len(config.model.hidden), limits.max_layers, "hidden layers")
    for index, units in enumerate(config.model.hidden):
        at_most(f"model.hidden.{index}", units, limits.max_hidden_units, "hidden units")
