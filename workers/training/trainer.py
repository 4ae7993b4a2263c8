"""The training loop: the notes' loop, made reportable, cancellable and fast.

The order of random draws is the notes': seed, generate the data, initialise the
model (ensemble members one after another), then shuffle (mini-batch only). With
the notes' configuration the reports are the notes' printed lines; on the CPU the
same configuration gives the same weights, bit for bit.

The loop touches the host only at report points (``.item()`` is a synchronisation on
an accelerator, and the notes' per-epoch metrics cost time on the CPU too), so the
NaN check, the progress callback and the cancellation check all happen there.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from workers.errors import InvalidInput, InvalidParameter, TensorlensError
from workers.training.configs import AdamSpec, RegressionConfig, SpiralConfig
from workers.training.datasets import make_cubic, make_spiral, seeded_generator
from workers.training.models import Ensemble, build_model, io_features, parameter_count

__all__ = [
    "Progress",
    "TrainResult",
    "TrainingCancelled",
    "TrainingDiverged",
    "build_metadata",
    "resolve_device",
    "train",
]

_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "cross_entropy": F.cross_entropy,
    "mse": F.mse_loss,
    "l1": F.l1_loss,
    "smooth_l1": F.smooth_l1_loss,
}


class TrainingDiverged(InvalidInput):
    """The loss became NaN or infinite; the configuration cannot be trained (context: `epoch`)."""

    title = "Training diverged"


class TrainingCancelled(TensorlensError):
    """Training stopped at a report point because cancellation was asked for (context: `epoch`)."""

    title = "Training cancelled"


@dataclass(frozen=True)
class Progress:
    """Metrics at one report point; ``loss`` and ``accuracy`` are those of that epoch's forward."""

    epoch: int
    loss: float
    accuracy: float | None
    elapsed_s: float


@dataclass
class TrainResult:
    """A trained model: ``tensors`` are its state dict as contiguous CPU tensors."""

    model: nn.Module
    tensors: dict[str, torch.Tensor]
    history: list[Progress]
    architecture: str
    parameter_count: int
    device: str
    elapsed_s: float

    @property
    def final(self) -> Progress:
        return self.history[-1]


def resolve_device(requested: str) -> str:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a device this process has.

    Raises
    ------
    InvalidParameter
        For ``device`` when CUDA is asked for and not available, or the name is unknown.
    """
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(requested).type
    except RuntimeError:
        raise InvalidParameter("device", f"unknown device {requested!r}") from None
    if kind not in ("cpu", "cuda"):
        raise InvalidParameter("device", f"unsupported device {requested!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise InvalidParameter("device", "CUDA is not available on this worker")
    return requested


def train(
    config: SpiralConfig | RegressionConfig,
    *,
    report: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str | None = None,
) -> TrainResult:
    """Generate the configured dataset and train the configured model on it.

    Parameters
    ----------
    config : SpiralConfig or RegressionConfig
        What to train, validated (see :func:`~workers.training.configs.validate_training`).
    report : callable, optional
        Called with a :class:`Progress` every ``config.report_every`` epochs (epochs
        0, k, 2k, ...) and at the last epoch.
    should_stop : callable, optional
        Polled after each report; True stops the training.
    device : str, optional
        Overrides ``config.device`` (for a pool that places jobs itself).

    Returns
    -------
    TrainResult
        The model back on the CPU in eval mode, its state and the reported history.

    Raises
    ------
    TrainingDiverged
        When the loss at a report point is NaN or infinite.
    TrainingCancelled
        When ``should_stop`` returned True.
    InvalidParameter
        For ``device`` when it is not available.
    """
    started = time.perf_counter()
    device = resolve_device(device or config.device)
    generator = seeded_generator(config.data.seed)
    if isinstance(config, SpiralConfig):
        X, Y = make_spiral(config.data, generator)
    else:
        X, Y = make_cubic(config.data, generator)
    in_features, out_features = io_features(config)
    model = build_model(config.model, in_features, out_features, generator=generator)
    architecture = str(model)
    X, Y = X.to(device), Y.to(device)
    model.to(device)

    fit = (
        _EnsembleFit(model, config.loss)
        if isinstance(model, Ensemble)
        else _Fit(model, config.loss)
    )
    optimizer = _optimizer(config, fit.parameters)
    classify = isinstance(config, SpiralConfig)
    batch_size = config.batch_size if config.batch_size and config.batch_size < len(X) else None

    history: list[Progress] = []
    last = config.epochs - 1
    on_cpu = torch.device(device).type == "cpu"
    if on_cpu:
        # Denormals cost the CPU a microcode assist per operation; flushing them to zero
        # does not change a bit of the notes' reproduction (see the tests). The flag is
        # per thread, so trainings in other threads are unaffected.
        torch.set_flush_denormal(True)
    try:
        for epoch in range(config.epochs):
            reporting = epoch % config.report_every == 0 or epoch == last
            if batch_size is None:
                loss, correct = _full_batch_epoch(fit, optimizer, X, Y, classify and reporting)
            else:
                loss, correct = _mini_batch_epoch(
                    fit, optimizer, X, Y, batch_size, generator, classify and reporting
                )
            if not reporting:
                continue
            loss_value = loss.item() / fit.members
            if not math.isfinite(loss_value):
                raise TrainingDiverged(
                    f"loss became {loss_value} by epoch {epoch}", epoch=epoch, loss=str(loss_value)
                )
            accuracy = (correct.float() / len(Y)).item() if correct is not None else None
            progress = Progress(epoch, loss_value, accuracy, time.perf_counter() - started)
            history.append(progress)
            if report is not None:
                report(progress)
            if should_stop is not None and should_stop():
                raise TrainingCancelled(f"cancelled at epoch {epoch}", epoch=epoch)
    finally:
        if on_cpu:
            torch.set_flush_denormal(False)

    fit.write_back()
    model.to("cpu").eval()
    tensors = {
        name: value.detach().contiguous().clone() for name, value in model.state_dict().items()
    }
    return TrainResult(
        model=model,
        tensors=tensors,
        history=history,
        architecture=architecture,
        parameter_count=parameter_count(model),
        device=device,
        elapsed_s=time.perf_counter() - started,
    )


def build_metadata(config: SpiralConfig | RegressionConfig, result: TrainResult) -> dict[str, Any]:
    """The JSON-ready description of a trained model that the model store keeps beside it."""
    in_features, out_features = io_features(config)
    return {
        "task": config.task,
        "config": config.model_dump(mode="json"),
        "dataset": config.data.model_dump(mode="json"),
        "in_features": in_features,
        "out_features": out_features,
        "architecture": result.architecture,
        "parameter_count": result.parameter_count,
        "final_metrics": asdict(result.final),
        "history": [asdict(progress) for progress in result.history],
        "device": result.device,
        "training_time_s": result.elapsed_s,
        "torch_version": torch.__version__,
    }


class _Fit:
    """One network: its parameters, its forward and the loss summed over members."""

    members = 1

    def __init__(self, model: nn.Module, loss: str) -> None:
        self.forward: Callable[[torch.Tensor], torch.Tensor] = model
        self.parameters: list[torch.Tensor] = list(model.parameters())
        self._loss = _LOSSES[loss]

    def objective(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self._loss(prediction, target)

    def write_back(self) -> None:
        pass


class _EnsembleFit(_Fit):
    """The members' parameters stacked and trained as one vectorised model (torch.func).

    The objective is the sum of the members' losses: each member's gradient is that of
    its own loss, and the optimizers used act elementwise, so every member follows the
    path it would follow trained alone.
    """

    def __init__(self, model: Ensemble, loss: str) -> None:
        self._members = list(model.members)
        self.members = len(self._members)
        params, buffers = stack_module_state(self._members)
        skeleton = copy.deepcopy(self._members[0]).to("meta")

        def call(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor) -> Any:
            return functional_call(skeleton, (p, b), (x,))

        batched = vmap(call, in_dims=(0, 0, None))
        self._params = params
        self.forward = lambda x: batched(params, buffers, x)
        self.parameters = list(params.values())
        self._loss = _LOSSES[loss]

    def objective(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        per_element = self._loss(prediction, target.expand_as(prediction), reduction="none")
        return per_element.flatten(1).mean(1).sum()

    def write_back(self) -> None:
        with torch.no_grad():
            for index, member in enumerate(self._members):
                for name, parameter in member.named_parameters():
                    parameter.copy_(self._params[name][index])


def _optimizer(
    config: SpiralConfig | RegressionConfig, parameters: list[torch.Tensor]
) -> torch.optim.Optimizer:
    spec = config.optimizer
    if isinstance(spec, AdamSpec):
        # One kernel per tensor instead of a dozen small ops: about 10% of a spiral
        # epoch on the CPU. It rounds differently from the notes' Adam in the last
        # bits, and is just as deterministic.
        return torch.optim.Adam(parameters, lr=spec.lr, weight_decay=spec.weight_decay, fused=True)
    # The per-tensor loop, as the notes run it: fused and foreach are no faster for
    # SGD here, and the seed reproduction is kept bit for bit.
    return torch.optim.SGD(
        parameters, lr=spec.lr, weight_decay=spec.weight_decay, momentum=spec.momentum
    )


def _correct(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    _, predicted = torch.max(prediction.detach(), 1)
    return (target == predicted).sum()


def _full_batch_epoch(
    fit: _Fit, optimizer: torch.optim.Optimizer, X: torch.Tensor, Y: torch.Tensor, count: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    prediction = fit.forward(X)
    loss = fit.objective(prediction, Y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach(), _correct(prediction, Y) if count else None


def _mini_batch_epoch(
    fit: _Fit,
    optimizer: torch.optim.Optimizer,
    X: torch.Tensor,
    Y: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    count: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    order = torch.randperm(len(X), generator=generator).to(X.device)
    loss_sum = torch.zeros((), device=X.device)
    correct = torch.zeros((), dtype=torch.long, device=X.device) if count else None
    for start in range(0, len(X), batch_size):
        rows = order[start : start + batch_size]
        xb, yb = X[rows], Y[rows]
        prediction = fit.forward(xb)
        loss = fit.objective(prediction, yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(rows)
        if correct is not None:
            correct += _correct(prediction, yb)
    return loss_sum / len(X), correct
