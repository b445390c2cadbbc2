"""Model release: export a checkpoint, keep one champion per dataset behind a promotion gate, predict in batch.

- :mod:`~senet_dist.release.runtime`: what a released model is (``model.json``, :class:`ModelCard`) and how to run
  one (:func:`open_model`: an export or a checkpoint, local or a URI, checked before it is loaded);
- :mod:`~senet_dist.release.export`: TorchScript / ONNX export, verified against the PyTorch model on real test
  images before anything is published;
- :mod:`~senet_dist.release.registry`: the ``models`` table (append-only stage events, one champion per dataset),
  what each model measured, and the changes to it (register, promote, rollback, record an export);
- :mod:`~senet_dist.release.gate`: the promotion gate a flow run ends with (a fair comparison on the same test
  split, the decision, its serialisation under the lock);
- :mod:`~senet_dist.release.lock`: the per-dataset lock that serialises registry decisions (local and S3);
- :mod:`~senet_dist.release.predict`: batch prediction over files, directories or URIs, locally or with Ray Data.

Imports point one way: runtime <- export, predict; lock <- registry <- export, gate (gate also uses export).
Modules are imported by their users (the CLI, the pipeline); importing this package is cheap (no torch).
"""
