"""The Ray backend: the same work as the local pool, lanes and model server, on a Ray cluster.

Importing this package imports Ray (the optional ``ray`` extra); the local backend never does.
Image pipelines run on long-lived image worker actors (or as Ray tasks), trainings as Ray
tasks that stream their progress and return the weights, and loaded models as Ray actors
that batch their predictions.
"""

from workers.ray_backend.lanes import RayLanes
from workers.ray_backend.pool import RayPool
from workers.ray_backend.runtime import RayRuntime
from workers.ray_backend.serving import RayModelServer

__all__ = ["RayLanes", "RayModelServer", "RayPool", "RayRuntime"]
