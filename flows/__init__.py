"""Prefect flows (thin over senet_dist); installed as a package so ``senet-dist run`` can import them."""
