"""Import every variant module so its ``@register_model`` decorators run (imported by the registry)."""

from senet_dist.models import resnet  # noqa: F401
