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

The comparison and its outcome (:func:`decide`, :class:`GateResult`) are pure functions of records: no tables, no
locks, no evaluation, so the decision can be read (and tested) apart from how :func:`promote_best` gathers the
numbers (:func:`~senet_dist.release.registry.test_metrics`) and serialises the decision under the lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from senet_dist.artifacts import ArtifactStore, utcnow
from senet_dist.release.lock import registry_lock
from senet_dist.release.registry import (
    ARCHIVED,
    CHALLENGER,
    CHAMPION,
    IncompatibleModel,
    ModelRecord,
    RegistryError,
    append_events,
    candidate,
    record_export,
    states,
    test_metrics,
    with_metrics,
)
from senet_dist.storage import join, redact

__all__ = ["GateResult", "IncompatibleModel", "decide", "promote_best", "score"]

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
    from senet_dist.evaluation.metrics import report_split

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
        if card is not None and card.checkpoint == redact(best.checkpoint_uri or ""):  # a repeated gate: reuse it
            result.best = record_export(store, best.model_id, uri, card.sha256)
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


# ---- the decision ----------------------------------------------------------------------------------------
@dataclass
class GateResult:
    """What the gate decided, with the numbers it compared (all on ``version``'s test split)."""

    dataset: str
    version: str
    split: str  # "test"; "val" for a version sharded without a test split
    decision: str  # "promoted", "challenger" or "unchanged" (every new model already registered)
    reason: str
    best: ModelRecord | None  # the best new model, in its state after the decision
    previous_champion: ModelRecord | None  # the champion the best was compared with, in its state after
    candidates: list[ModelRecord] = field(default_factory=list)  # every new model, state after the decision
    reevaluated: bool = False  # the previous champion was trained on another version and measured on this one
    export_uri: str | None = None
    export_error: str | None = None

    @property
    def champion(self) -> ModelRecord | None:
        if self.best is not None and self.best.stage == CHAMPION:
            return self.best
        if self.previous_champion is not None and self.previous_champion.stage == CHAMPION:
            return self.previous_champion
        return None

    def table(self) -> list[dict[str, Any]]:
        """One row per model compared: the previous champion first, then the new models best first."""
        rows = []
        if self.previous_champion is not None:
            rows.append(_table_row(self.previous_champion, "champion before"))
        for rec in self.candidates:
            rows.append(
                _table_row(rec, "best new model" if self.best and rec.model_id == self.best.model_id else "new")
            )
        return rows

    def markdown(self) -> str:
        """Champion vs challenger side by side (the flow's Prefect artifact)."""
        head = f"# Promotion gate: `{self.dataset}` on {self.version}\n\n**{self.decision}**: {self.reason}\n\n"
        champ, best = self.previous_champion, self.best
        cols = [("champion before", champ), ("best new model", best)]
        cols = [(name, rec) for name, rec in cols if rec is not None]
        if not cols:
            return head
        lines = ["| | " + " | ".join(name for name, _ in cols) + " |", "|---|" + "---|" * len(cols)]

        def line(label: str, get: Any) -> None:
            lines.append(f"| {label} | " + " | ".join(get(rec) for _, rec in cols) + " |")

        line("model", lambda r: f"`{r.model_id}`")
        line("variant", lambda r: r.variant or "?")
        line("trained on", lambda r: r.dataset_version or "?")
        line(f"{self.split} accuracy on {self.version}", lambda r: fmt_num(r.accuracy))
        line(f"{self.split} macro F1 on {self.version}", lambda r: fmt_num(r.macro_f1))
        line(f"{self.split} images", lambda r: str(r.metrics.get("num_samples", "?")))
        line("stage now", lambda r: f"**{r.stage}**")
        body = "\n".join(lines) + "\n"
        notes = []
        if self.reevaluated and champ is not None:
            notes.append(
                f"The champion was trained on {champ.dataset_version} and re-evaluated on {self.version}'s "
                f"{self.split} split for this comparison."
            )
        others = [r for r in self.candidates if best is None or r.model_id != best.model_id]
        if others:
            notes.append(
                "Other new models (challengers): "
                + ", ".join(f"`{r.model_id}` {fmt_num(r.accuracy)}" for r in others)
                + "."
            )
        if self.export_uri:
            notes.append(f"Exported: `{self.export_uri}`")
        if self.export_error:
            notes.append(f"Export failed (the champion is served from its checkpoint): {self.export_error}")
        return head + body + ("\n" + "\n\n".join(notes) + "\n" if notes else "")


def fmt_num(x: float | None) -> str:
    """A metric as the gate's reasons and tables show it (``-`` when unmeasured)."""
    return "-" if x is None else f"{x:.4f}"


def _table_row(rec: ModelRecord, role: str) -> dict[str, Any]:
    return {
        "role": role,
        "model_id": rec.model_id,
        "variant": rec.variant,
        "trained_on": rec.dataset_version,
        "evaluated_on": rec.eval_dataset_version,
        "accuracy": rec.accuracy,
        "macro_f1": rec.macro_f1,
        "stage": rec.stage,
        "reason": rec.reason,
    }


def score(rec: ModelRecord) -> tuple[float, float]:
    """The pair "beats" compares: (accuracy, macro F1), an unmeasured metric ranking below every measured one."""
    return (rec.accuracy if rec.accuracy is not None else -1.0, rec.macro_f1 if rec.macro_f1 is not None else -1.0)


def decide(
    dataset: str,
    version: str,
    split: str,
    best: ModelRecord,
    fresh: list[ModelRecord],
    champ: ModelRecord | None,
    champ_eval: ModelRecord | None,
    note: str,
) -> tuple[list[dict[str, Any]], GateResult]:
    """The ``models`` events for ``best`` vs the champion (``champ``; ``champ_eval`` its metrics on this version,
    None when it cannot be compared, ``note`` says why) and every other new model, with the result they produce."""
    now = utcnow()
    where = f"{version}/{split}"
    if champ is None:
        promoted, reason = True, f"first champion of {dataset}: accuracy {fmt_num(best.accuracy)} on {where}"
    elif champ_eval is None:
        promoted, reason = True, note
    elif score(best) > score(champ_eval):
        promoted = True
        reason = (
            f"{best.model_id} beats champion {champ.model_id} on {where}: accuracy {fmt_num(best.accuracy)} > "
            f"{fmt_num(champ_eval.accuracy)} (macro F1 {fmt_num(best.macro_f1)} vs {fmt_num(champ_eval.macro_f1)})"
        )
    else:
        promoted = False
        reason = (
            f"{best.model_id} does not beat champion {champ.model_id} on {where}: accuracy "
            f"{fmt_num(best.accuracy)} vs {fmt_num(champ_eval.accuracy)} (macro F1 {fmt_num(best.macro_f1)} vs "
            f"{fmt_num(champ_eval.macro_f1)})"
        )
    rows: list[dict[str, Any]] = []
    best_row = (
        best.event(at=now, stage=CHAMPION, promoted_at=now, reason=reason, action="gate")
        if promoted
        else best.event(at=now, stage=CHALLENGER, reason=reason, action="gate")
    )
    rows.append(best_row)
    for rec in fresh[1:]:
        rows.append(
            rec.event(
                at=now,
                stage=CHALLENGER,
                reason=f"below the best new model {best.model_id} on {where}: accuracy {fmt_num(rec.accuracy)} vs "
                f"{fmt_num(best.accuracy)}",
                action="gate",
            )
        )
    prev_row = None
    if champ is not None:
        base = champ_eval or champ
        if promoted:
            prev_row = base.event(
                at=now, stage=ARCHIVED, promoted_at=None, reason=f"replaced by {best.model_id}: {reason}", action="gate"
            )
        elif champ_eval is not None and champ.eval_dataset_version != version:
            prev_row = base.event(at=now, reason=f"kept: {reason}", action="reevaluate")
        if prev_row is not None:
            rows.append(prev_row)
    after = {r["model_id"]: ModelRecord.from_row(r) for r in rows}
    candidates = [after[r.model_id] for r in fresh]
    prev_after = after.get(champ.model_id, champ_eval or champ) if champ is not None else None
    result = GateResult(
        dataset=dataset,
        version=version,
        split=split,
        decision="promoted" if promoted else "challenger",
        reason=reason,
        best=after[best.model_id],
        previous_champion=prev_after,
        candidates=candidates,
    )
    return rows, result


def unchanged(
    dataset: str, version: str, split: str, new: list[ModelRecord], current: dict[str, ModelRecord]
) -> GateResult:
    """The result of a repeated gate: every new model was decided before, so nothing is appended."""
    now = [current[r.model_id] for r in new]
    champ = next((r for r in current.values() if r.stage == CHAMPION), None)
    return GateResult(
        dataset=dataset,
        version=version,
        split=split,
        decision="unchanged",
        reason="every new model was already registered (a repeated gate)",
        best=now[0],
        previous_champion=champ,
        candidates=now,
    )
