"""The promotion gate on real lfw shards and real tiny models: first champion (exported), a worse challenger, a
better model, a repeated gate, changed data (the champion re-evaluated on the new test split first), a champion
whose classes no longer match, and two gates racing in two processes."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import pyarrow.compute as pc
import pytest

from senet_dist.artifacts import ArtifactStore
from senet_dist.data import DatasetInfo
from senet_dist.evaluation.metrics import evaluate_checkpoint
from senet_dist.release import registry as reg
from senet_dist.release.gate import promote_best
from senet_dist.release.runtime import CARD_FILE, ModelCard
from tests.helpers import PYTHON, REPO, make_tree, shard
from tests.release.conftest import record_run, train_checkpoint


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


def test_gate_first_champion_worse_better_and_repeat(store, checkpoints, lfw_version, tmp_path):
    exports = str(tmp_path / "artifacts" / "exports")
    acc = {name: record_run(store, name, checkpoints[name], lfw_version) for name in ("weak", "untrained", "strong")}
    assert acc["strong"] > acc["weak"] > acc["untrained"]
    version = DatasetInfo.load(lfw_version).version

    first = promote_best(store, "lfw", lfw_version, ["weak"], export_root=exports)
    assert first.decision == "promoted" and first.reason.startswith("first champion of lfw")
    assert first.previous_champion is None and first.champion.model_id == "weak"
    card = ModelCard.from_json((Path(first.export_uri) / CARD_FILE).read_text())
    assert first.export_uri == f"{exports}/weak/torchscript" and card.verification["passed"]
    assert card.model_id == "weak" and card.dataset["name"] == "lfw"
    assert reg.champion(store, "lfw").export_uris == (first.export_uri,)

    worse = promote_best(store, "lfw", lfw_version, ["untrained"], export_root=exports)
    assert worse.decision == "challenger" and worse.export_uri is None
    assert f"accuracy {acc['untrained']:.4f} vs {acc['weak']:.4f}" in worse.reason and f"{version}/test" in worse.reason
    assert worse.best.stage == "challenger" and worse.best.reason == worse.reason
    assert reg.champion(store, "lfw").model_id == "weak" and not worse.reevaluated

    record_run(store, "also-weak", checkpoints["weak"], lfw_version)
    better = promote_best(store, "lfw", lfw_version, ["also-weak", "strong"], export_root=exports)
    assert better.decision == "promoted" and better.best.model_id == "strong"
    now = reg.states(store, "lfw")
    assert now["strong"].stage == "champion" and now["strong"].export_uris
    assert now["weak"].stage == "archived" and now["weak"].reason.startswith("replaced by strong")
    assert now["also-weak"].stage == "challenger" and "below the best new model strong" in now["also-weak"].reason
    assert now["untrained"].stage == "challenger"
    md = better.markdown()
    assert "| model | `weak` | `strong` |" in md and f"{acc['strong']:.4f}" in md and "**promoted**" in md
    assert [r["role"] for r in better.table()] == ["champion before", "best new model", "new"]

    again = promote_best(store, "lfw", lfw_version, ["also-weak", "strong"], export_root=exports)
    assert again.decision == "unchanged" and reg.champion(store, "lfw").model_id == "strong"
    assert again.export_uri == better.export_uri  # already exported: kept
    assert store.read("evaluations").num_rows == 4  # every number came from the recorded evaluations


@pytest.fixture(scope="module")
def changed_versions(lfw_source_factory, tmp_path_factory) -> tuple[Path, Path]:
    """v2: lfw with 30 images per class removed (different splits, 14 test images); v3: a third class added."""
    root = tmp_path_factory.mktemp("changed")
    v2_src = root / "lfw-v2"
    shutil.copytree(lfw_source_factory(None), v2_src)
    for cls in ("face", "non_face"):
        for p in sorted((v2_src / cls).iterdir())[:30]:
            p.unlink()
    v3_src = root / "lfw-v3"
    shutil.copytree(v2_src, v3_src)
    make_tree(v3_src, {"other": 40}, size=(25, 25), ext=".png")
    return shard(v2_src, root / "shards-v2"), shard(v3_src, root / "shards-v3")


def test_changed_data_reevaluates_the_champion_on_the_new_test_split(
    store, checkpoints, lfw_version, changed_versions, tmp_path
):
    v2 = changed_versions[0]
    info2 = DatasetInfo.load(v2)
    record_run(store, "strong", checkpoints["strong"], lfw_version)
    assert promote_best(store, "lfw", lfw_version, ["strong"]).decision == "promoted"

    # A model trained on v2 (untrained: near chance). The champion was measured on v1; the gate measures it on v2.
    ckpt = train_checkpoint(v2, tmp_path / "v2-model", epochs=0, seed=3, run_name="v2-model")
    record_run(store, "v2-model", ckpt, v2)
    result = promote_best(store, "lfw", v2, ["v2-model"])

    expected = evaluate_checkpoint(checkpoints["strong"], v2, device="cpu")
    champ = result.previous_champion
    assert result.reevaluated and result.version == info2.version
    assert champ.eval_dataset_version == info2.version and champ.accuracy == expected.accuracy
    assert champ.metrics["num_samples"] == info2.counts["test"] == expected.num_samples != 20
    assert result.decision == "challenger" and f"on {info2.version}/test" in result.reason
    recorded = store.read(
        "evaluations", filter=(pc.field("run_id") == "strong") & (pc.field("dataset_version") == info2.version)
    )
    assert recorded.num_rows == 1  # the re-evaluation is an evaluation like any other
    state = reg.champion(store, "lfw")
    assert state.model_id == "strong" and state.action == "reevaluate" and state.eval_dataset_version == info2.version
    assert state.dataset_version == DatasetInfo.load(lfw_version).version  # still trained on v1
    assert "re-evaluated on" in result.markdown()

    # A later gate on v2 uses the recorded re-evaluation (no second one).
    record_run(store, "v2-strong", checkpoints["strong"], v2)  # same weights, so a tie: not a strict win
    tie = promote_best(store, "lfw", v2, ["v2-strong"])
    assert (
        tie.decision == "challenger"
        and recorded.num_rows
        == store.read(
            "evaluations", filter=(pc.field("run_id") == "strong") & (pc.field("dataset_version") == info2.version)
        ).num_rows
    )


def test_a_champion_with_other_classes_is_replaced(store, checkpoints, lfw_version, changed_versions, tmp_path):
    v3 = changed_versions[1]
    record_run(store, "strong", checkpoints["strong"], lfw_version)
    promote_best(store, "lfw", lfw_version, ["strong"])
    ckpt = train_checkpoint(v3, tmp_path / "three", epochs=0, seed=4, run_name="three")
    record_run(store, "three", ckpt, v3)
    result = promote_best(store, "lfw", v3, ["three"])
    assert result.decision == "promoted" and "cannot be compared" in result.reason and "classes" in result.reason
    assert reg.states(store, "lfw")["strong"].stage == "archived"


GATE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from senet_dist.artifacts import ArtifactStore
    from senet_dist.release import gate
    root, version, run, sync = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
    real_lock = gate.registry_lock

    def lock_after_both_compared(store, dataset, **kw):
        # The worst interleaving, every time: both gates have read the champion ("untrained") and measured it
        # before either writes; then "strong" writes first and "weak" second, so a gate that did not re-check
        # under the lock would crown the weaker model last.
        (sync / f"compared-{run}").touch()
        while not all((sync / f"compared-{r}").exists() for r in ("weak", "strong")):
            time.sleep(0.005)
        if run == "weak":
            time.sleep(1.0)
        return real_lock(store, dataset, **kw)

    gate.registry_lock = lock_after_both_compared
    result = gate.promote_best(ArtifactStore(root), "lfw", version, [run])
    print("RESULT", run, result.decision, result.reason)
    """
)


def test_two_gates_racing_in_two_processes_keep_the_better_model(store, checkpoints, lfw_version, tmp_path):
    record_run(store, "untrained", checkpoints["untrained"], lfw_version)
    promote_best(store, "lfw", lfw_version, ["untrained"])
    for name in ("weak", "strong"):
        record_run(store, name, checkpoints[name], lfw_version)
    procs = {
        run: subprocess.Popen(
            [PYTHON, "-c", GATE, store.root, str(lfw_version), run, str(tmp_path)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for run in ("weak", "strong")
    }
    outs = {}
    for run, p in procs.items():
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0 and "RESULT" in out, err[-3000:]
        outs[run] = out
    assert "RESULT strong promoted" in outs["strong"]
    assert "RESULT weak challenger weak does not beat champion strong" in outs["weak"]  # compared again, with strong
    latest: dict[str, str] = {}
    for ev in reg.events(store, "lfw"):
        latest[ev.model_id] = ev.stage
    assert latest == {"untrained": "archived", "strong": "champion", "weak": "challenger"}


def test_a_repeated_gate_finishes_a_missed_export(store, checkpoints, lfw_version, tmp_path):
    """A promote task that died after deciding but before exporting: its retry changes nothing but the export."""
    record_run(store, "strong", checkpoints["strong"], lfw_version)
    assert promote_best(store, "lfw", lfw_version, ["strong"]).export_uri is None  # no export root: none made
    retry = promote_best(store, "lfw", lfw_version, ["strong"], export_root=str(tmp_path / "exports"))
    assert retry.decision == "unchanged" and retry.export_uri == str(tmp_path / "exports" / "strong" / "torchscript")
    assert reg.champion(store, "lfw").export_uris == (retry.export_uri,)
    assert promote_best(store, "lfw", lfw_version, ["strong"], export_root=str(tmp_path / "exports")).export_uri == (
        retry.export_uri
    )
