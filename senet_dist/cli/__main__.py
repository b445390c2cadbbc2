"""``python -m senet_dist.cli``: the same app as the ``senet-dist`` console script."""

from senet_dist.cli import main

main()
