"""SE model zoo: one SE block (``se.py``), several variants, one registry.

``create_model(name, num_classes, **kw)`` is the only constructor callers need.
"""

from senet_dist.models.registry import (
    UnknownModelError,
    check_model_name,
    create_model,
    list_models,
    register_model,
)
from senet_dist.models.table import model_table

__all__ = [
    "UnknownModelError",
    "check_model_name",
    "create_model",
    "list_models",
    "model_table",
    "register_model",
]
