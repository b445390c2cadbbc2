"""Model release: export a checkpoint, keep one champion per dataset behind a promotion gate, predict in batch.

- :mod:`~senet_dist.release.metadata`: what an exported model carries (``model.json``) and how inputs are prepared;
- :mod:`~senet_dist.release.export`: TorchScript / ONNX export, verified against the PyTorch model on real test images
  (its steps: :mod:`~senet_dist.release.export_source`, :mod:`~senet_dist.release.writers`,
  :mod:`~senet_dist.release.verify`; errors in :mod:`~senet_dist.release.errors`);
- :mod:`~senet_dist.release.registry`: the ``models`` table (append-only stage events); manual register / promote /
  rollback in :mod:`~senet_dist.release.promotion`;
- :mod:`~senet_dist.release.gate`: the promotion gate a flow run ends with (fair comparison on the same test split;
  the decision in :mod:`~senet_dist.release.decision`, champion re-evaluation in :mod:`~senet_dist.release.reevaluate`);
- :mod:`~senet_dist.release.lock`: the per-dataset lock that serialises registry decisions (local and S3);
- :mod:`~senet_dist.release.predict`: batch prediction over files, directories or URIs, locally or with Ray Data
  (inputs and output in :mod:`~senet_dist.release.predict_io`, the model in :mod:`~senet_dist.release.predictor`).

Modules are imported by their users (the CLI, the flow); importing this package is cheap (no torch).
"""
