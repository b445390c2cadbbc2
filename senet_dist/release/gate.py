"""The promotion gate a flow run ends with: the best new model of a dataset becomes its champion only if it beats
the current champion on the SAME test split.

1. The new models' test metrics on the flow's dataset version come from the ``evaluations`` table.
2. The current champion was perhaps measured on an older version: it is re-evaluated on this version's test split
   first (the evaluation is recorded in ``evaluations`` like any other), so both numbers describe the same images.
   A champion whose classes differ from this version's cannot be compared; the best new model then replaces it.
3. "Beats" is a strictly higher (accuracy, macro F1), compared as a pair. A winner becomes ``champion`` and the old
   champion ``archived``; otherwise the best new model is recorded as ``challenger`` with both numbers. Every other
   new model is a ``challenger``.
4. The decision is appended under the dataset's registry lock, after checking that the champion is still the one
   it was compared with (else the gate compares again): two flows finishing together never leave two champions,
   and the better model wins whatever their order.
5. A new champion is exported (TorchScript by default, verified) under ``export_root/<model_id>/<format>``
   (the flow: ``<artifacts>/exports/...``, beside the tables, never inside one).

This module gathers the numbers and serialises the decision; the comparison itself and :class:`GateResult` live in
:mod:`~senet_dist.release.decision`, measuring a model on the version in :mod:`~senet_dist.release.reevaluate`
(both re-exported here).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from senet_dist.artifacts import ArtifactStore
from senet_dist.release.decision import GateResult, decide, score, unchanged
from senet_dist.release.lock import registry_lock
from senet_dist.release.promotion import candidate, record_export
from senet_dist.release.reevaluate import IncompatibleModel, test_metrics, with_metrics
from senet_dist.release.registry import CHAMPION, ModelRecord, RegistryError, append_events, states
from senet_dist.storage import join

__all__ = ["GateResult", "IncompatibleModel", "promote_best", "test_metrics"]

log = logging.getLogger(__name__)


def promote_best(
    store: ArtifactStore,
    dataset: str,
    version_dir: str | Path,
    run_ids: list[str],
    *,
    export_root: str | None = None,
    export_format: str = "torchscript",
    attempts: int = 5,
) -> GateResult:
    """Register the completed runs ``run_ids`` of ``dataset`` and let the best one through the gate (module doc)."""
    from senet_dist.data import DatasetInfo

    if not run_ids:
        raise RegistryError("the gate needs at least one new run")
    from senet_dist.evaluate import report_split

    version, split = DatasetInfo.load(version_dir).version, report_split(version_dir)
    new: list[ModelRecord] = []
    for run_id in run_ids:
        rec = candidate(store, run_id, dataset)
        metrics, _ = _measure(store, rec, version_dir)
        new.append(with_metrics(rec, metrics))
    new.sort(key=lambda r: (tuple(-x for x in score(r)), r.model_id))

    for _ in range(attempts):
        before = states(store, dataset)
        fresh = [r for r in new if r.model_id not in before]
        if not fresh:  # a repeated gate (a retried task): decided before; finish an export it may have missed
            result = unchanged(dataset, version, split, new, before)
            champ_now = result.previous_champion
            if export_root is not None and champ_now is not None and champ_now.model_id in {r.model_id for r in new}:
                if champ_now.export_for(export_format) is None:
                    result.best = champ_now
                    _export_champion(store, result, version_dir, export_root, export_format)
                else:
                    result.export_uri = champ_now.export_for(export_format)
            return result
        best = fresh[0]
        champ = next((r for r in before.values() if r.stage == CHAMPION), None)
        champ_eval, reevaluated, note = None, False, ""
        if champ is not None:
            try:
                metrics, _ = _measure(store, champ, version_dir)
                champ_eval = with_metrics(champ, metrics)
                reevaluated = champ.dataset_version != version
            except IncompatibleModel as exc:
                note = f"champion {champ.model_id} cannot be compared on {version}: {exc}"
        with registry_lock(store, dataset) as lock:
            now_states = states(store, dataset)
            now_champ = next((r for r in now_states.values() if r.stage == CHAMPION), None)
            if (now_champ and now_champ.model_id) != (champ and champ.model_id) or any(
                r.model_id in now_states for r in fresh
            ):
                continue  # another gate or a person decided meanwhile: compare with what is there now
            if champ_eval is not None and now_champ is not None:
                champ_eval = with_metrics(now_champ, champ_eval.metrics)  # its newest event (exports included)
            rows, result = decide(dataset, version, split, best, fresh, now_champ, champ_eval, note)
            result.reevaluated = reevaluated
            lock.fence()
            append_events(store, rows)
        if export_root is not None and result.decision == "promoted" and result.best is not None:
            _export_champion(store, result, version_dir, export_root, export_format)
        return result
    raise RegistryError(f"dataset {dataset!r}: the champion kept changing during {attempts} promotion attempts")


def _measure(store: ArtifactStore, rec: ModelRecord, version_dir: str | Path) -> tuple[dict[str, Any], bool]:
    return test_metrics(
        store, version_dir, run_id=rec.run_id, checkpoint=rec.checkpoint_uri, model_id=rec.model_id, variant=rec.variant
    )


def _export_champion(
    store: ArtifactStore, result: GateResult, version_dir: str | Path, export_root: str, fmt: str
) -> None:
    """Export the new champion; a failure is reported in the result (the checkpoint still serves predictions)."""
    from senet_dist.release.export import ExportError, existing_export, export_model

    best = result.best
    assert best is not None
    uri = join(export_root, best.model_id, fmt)
    try:
        card = existing_export(uri)
        if card is not None and card.checkpoint == best.checkpoint_uri:  # a repeated gate: reuse it
            result.best = record_export(store, best.model_id, uri)
        else:
            exported = export_model(
                best.checkpoint_uri or best.model_id, fmt, uri, store=store, data=version_dir, model_id=best.model_id
            )
            result.best = states(store, dataset=best.dataset).get(best.model_id, best)
            uri = exported.uri
        result.export_uri = uri
    except (ExportError, RuntimeError, OSError) as exc:
        result.export_error = f"{type(exc).__name__}: {exc}"
        log.warning("export of champion %s failed: %s", best.model_id, result.export_error)
