"""The notes' code, kept verbatim as the reference the workers are checked against."""

import math
import random
from types import SimpleNamespace

import pytest
import torch
from torch import nn


def notes_spiral(seed=12345, N=1000, C=3, D=2, noise=0.2):
    """Seed and generate the spiral as the notes do, leaving the global RNG where they do."""
    random.seed(seed)
    torch.manual_seed(seed)
    X = torch.zeros(N * C, D)
    Y = torch.zeros(N * C, dtype=torch.long)
    for c in range(C):
        index = 0
        t = torch.linspace(0, 1, N)
        inner_var = (
            torch.linspace((2 * math.pi / C) * c, (2 * math.pi / C) * (2 + c), N)
            + torch.randn(N) * noise
        )
        for ix in range(N * c, N * (c + 1)):
            X[ix] = t[index] * torch.FloatTensor(
                (math.sin(inner_var[index]), math.cos(inner_var[index]))
            )
            Y[ix] = c
            index += 1  # noqa: SIM113
    return X, Y


def notes_cubic(seed=1):
    random.seed(seed)
    torch.manual_seed(seed)
    X = torch.unsqueeze(torch.linspace(-1, 1, 100), dim=1)
    y = X.pow(3) + 0.3 * torch.rand(X.size())
    return X, y


def notes_linear_run(epochs):
    """The notes' linear model under SGD; returns the printed lines and the final state."""
    X, Y = notes_spiral()
    D, C, H = 2, 3, 100
    model = nn.Sequential(nn.Linear(D, H), nn.Linear(H, C))
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, weight_decay=1e-5)
    lines = []
    for t in range(epochs):
        y_pred = model(X)
        loss = criterion(y_pred, Y)
        score, predicted = torch.max(y_pred, 1)  # noqa: RUF059
        acc = (Y == predicted).sum().float() / len(Y)  # noqa: SIM300
        lines.append("[EPOCH]: %i, [LOSS]: %.6f, [ACCURACY]: %.3f" % (t, loss.item(), acc))  # noqa: UP031
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return lines, model.state_dict()


@pytest.fixture
def notes():
    """The notes' functions; the global RNG they seed is restored afterwards."""
    python_state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        yield SimpleNamespace(spiral=notes_spiral, cubic=notes_cubic, linear_run=notes_linear_run)
    random.setstate(python_state)
