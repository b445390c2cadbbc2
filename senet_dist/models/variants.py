"""Import every variant module so its ``@register_model`` decorators run (imported by the registry)."""

from senet_dist.models import cifar, densenet, res_densenet, resnet  # noqa: F401
