"""python -m cxrcam.evaluate end to end on tiny checkpoints trained here (seconds each)."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cxrcam.data.synthetic import ensure_synthetic
from cxrcam.errors import CxrcamError
from cxrcam.evaluate import evaluate, layers_for

from conftest import TINY_CLASSES, compose_config, train_tiny

CHEAP = ["device=cpu", "faithfulness.n_images=4", "faithfulness.percentiles=[50]", "sanity.n_images=4",
         "bootstrap.n_resamples=100"]


def compose_evaluate_config(*overrides: str) -> dict:
    return compose_config("evaluate", *CHEAP, *overrides)


@pytest.fixture(scope="module")
def checkpoint(tiny_synthetic, tmp_path_factory) -> Path:
    return train_tiny(tiny_synthetic, tmp_path_factory.mktemp("run"))


@pytest.mark.slow
def test_evaluate_writes_metrics_with_chance_levels_and_a_self_contained_report(checkpoint, tmp_path):
    assert evaluate(compose_evaluate_config(f"ckpt={checkpoint}"), tmp_path) == []
    metrics = json.loads((tmp_path / "cam_metrics.json").read_text())
    (result,) = metrics["models"]
    assert result["model"] == "simple_cnn" and result["layer"] == "features.3" and result["grid"] == [2, 2]
    assert result["n_images"] == 8 and result["masks"] == {"lungs": 8, "lesion": 6, "marker": 0, "one_lung": 0}
    scores = result["scores"]
    assert scores["pointing"]["overall"]["n"] == 6  # Normal images have no lesion
    assert set(scores["pointing"]["per_class"]) == {"COVID", "Lung_Opacity", "Viral Pneumonia"}
    for metric in ("pointing", "pointing_tolerant", "zone_hit", "energy", "otsu_iou", "lung_share"):
        ci = scores[metric]["overall"]
        assert 0 <= ci["low"] <= ci["mean"] <= ci["high"] <= 1
    chance = {metric: score["chance"]["overall"]["mean"] if score["chance"] else None
              for metric, score in scores.items()}
    assert 0 < chance["pointing"] == chance["energy"] < chance["pointing_tolerant"]
    assert chance["otsu_iou"] is None and 0 < chance["lung_share"] < 1
    for score in scores.values():  # each verdict is its interval against its chance level
        if score["chance"]:
            level, ci = score["chance"]["overall"]["mean"], score["overall"]
            assert score["versus_chance"] == ("above" if ci["low"] > level else "below" if ci["high"] < level
                                              else "not distinguishable from")
    assert "pointing_chance" not in scores and not any(k.startswith("pattern") for k in scores)
    assert [(p["cls"], p["criterion"]) for p in result["patterns"] if p["criterion"] == "diffuse"] == [
        ("Normal", "diffuse")]
    assert all(p["shown"] == (p["agrees"]["mean"] >= 0.5) for p in result["patterns"])
    lesion = {(p["cls"], p["criterion"]): p for p in result["lesion_patterns"]}
    unilateral = lesion["Lung_Opacity", "unilateral"]
    assert unilateral["agrees"]["mean"] == 1.0 and unilateral["shown"]
    faithfulness = result["faithfulness"]
    assert faithfulness["n_images"] == 4 and len(faithfulness["road_morf"]) == 1
    combined = faithfulness["road_combined"]
    assert faithfulness["verdict"] == ("faithful" if combined["low"] > 0 else "inverted" if combined["high"] < 0
                                       else "indistinguishable")
    steps = result["sanity"]["steps"]
    assert steps[0]["block"] == "trained" and len(steps) == 7 and result["sanity"]["threshold"] == 0.3
    assert result["sanity"]["passes"] == (steps[-1]["rank_correlation"] < 0.3)
    assert set(result["zone_profiles"]) == set(TINY_CLASSES)
    assert "pictures" not in result

    with open(tmp_path / "cam_metrics.csv") as f:
        rows = list(csv.DictReader(f))
    pointing = next(r for r in rows if r["metric"] == "pointing" and r["class"] == "all")
    assert float(pointing["chance"]) == pytest.approx(chance["pointing"], abs=1e-4)
    assert pointing["grid"] == "2x2"
    diffuse = next(r for r in rows if r["metric"] == "pattern:diffuse")
    assert diffuse["class"] == "Normal" and diffuse["chance"] == ""

    page = (tmp_path / "report.html").read_text()
    sources = re.findall(r"<img src='([^']*)'", page)
    assert len(sources) == 7 and all(s.startswith("data:image/png;base64,") for s in sources)
    headings = re.findall(r"<h2>([^<]*)</h2>", page)
    assert headings[0] == "Data" and headings[-1] == "Conclusions" and "Shortcut audit" not in page
    assert "chance" in page and "2x2" in page
    markdown = (tmp_path / "report.md").read_text()
    assert "| lesion masks (reference) |" in markdown  # lesion masks here: their row is the reference
    linked = re.findall(r"!\[[^\]]*\]\(([^)]*)\)", markdown)
    assert len(linked) == 7 and all((tmp_path / p).is_file() for p in linked)


@pytest.mark.slow
def test_methods_and_layers_are_reported_apart_and_bad_images_are_listed(tiny_dataset_copy, tmp_path):
    ckpt = train_tiny(tiny_dataset_copy, tmp_path / "run")
    with open(tmp_path / "run" / "split.csv") as f:
        tests = [r["path"] for r in csv.DictReader(f) if r["split"] == "test" and r["label"] == "COVID"]
    broken, bad_mask = tests
    Path(broken).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (Path(bad_mask).parents[1] / "masks" / Path(bad_mask).name).write_bytes(b"")  # a corrupt lung mask
    out = tmp_path / "eval"
    failures = evaluate(compose_evaluate_config(f"ckpt={ckpt}", "cam.layer=[features.2,features.3]",
                                                "cam.method=[gradcam,hirescam]"), out)
    assert sorted(failures) == sorted(tests)  # logged and left out; the other 6 images are scored
    results = json.loads((out / "cam_metrics.json").read_text())["models"]
    assert [(r["method"], r["layer"], r["grid"], r["n_images"]) for r in results] == [
        ("gradcam", "features.2", [4, 4], 6), ("gradcam", "features.3", [2, 2], 6),
        ("hirescam", "features.2", [4, 4], 6), ("hirescam", "features.3", [2, 2], 6)]
    assert results[0]["scores"] != results[2]["scores"]
    assert [r["sanity"] is not None and r["faithfulness"] is not None for r in results] == [True, False, False,
                                                                                            False]  # first only
    assert "simple_cnn gradcam @ features.2 (4x4)" in (out / "report.md").read_text()


@pytest.mark.slow
def test_shortcut_audit_compares_marker_mass(checkpoint, tmp_path):
    marked = ensure_synthetic(tmp_path / "marked", n_per_class=8, resolution=64, seed=1,
                              marker={"COVID": 1.0, "Normal": 0.5})
    assert len(list((marked / "COVID" / "marker_masks").glob("*.png"))) == 8
    with open(marked / "metadata.csv") as f:
        flags = [(r["label"], r["marker"]) for r in csv.DictReader(f)]
    assert {m for label, m in flags if label == "COVID"} == {"1"}
    assert {m for label, m in flags if label == "Lung_Opacity"} == {"0"}
    confounded = train_tiny(marked, tmp_path / "confounded")
    out = tmp_path / "eval"
    evaluate(compose_evaluate_config(f"ckpt={checkpoint}", f"shortcut_ckpt={confounded}", f"control_ckpt={confounded}",
                                     "faithfulness.n_images=2", "sanity.n_images=2"), out)
    audit = json.loads((out / "cam_metrics.json").read_text())["shortcut_audit"]
    assert [r["role"] for r in audit["rows"]] == ["confounded", "control", "clean"]
    # the same model as its own control: the same shares, so no difference is claimed
    shares = [row["evaluation"]["scores"]["marker_share"] for row in audit["rows"]]
    assert shares[0] == shares[1]
    control, clean = audit["comparisons"]
    assert (control["role"], control["difference"], clean["role"]) == ("control", "no clearly different", "clean")
    assert control["confounded"] == control["other"] == clean["confounded"] == shares[0]["overall"]
    assert clean["other"] == shares[2]["overall"]
    assert audit["n_marked"] >= 2  # the 2 COVID test images at least
    for row in audit["rows"]:
        share = row["evaluation"]["scores"]["marker_share"]["overall"]
        assert share["n"] == audit["n_marked"] and 0 <= share["mean"] <= 1
    page = (out / "report.html").read_text()
    assert "Shortcut audit" in page and "no clearly different than the control" in page
    # 64 px phantoms are under the detector's 128 px: the detected-marker column says n/a, not 0
    audit_table = (out / "report.md").read_text().split("## Shortcut audit")[1].split("\n## ")[0]
    header = next(line for line in audit_table.splitlines() if line.startswith("| role |"))
    assert "| detected-marker share, all | lung share |" in header
    assert all(line.split(" | ")[-3] == "n/a" for line in audit_table.splitlines()
               if line.startswith(("| confounded", "| control", "| clean")))
    # the causal test on the marked images; the same model as its own control; no marker in the clean test split
    tested = [row["evaluation"]["reliance"] for row in audit["rows"]]
    assert tested[0] == tested[1]
    assert [(t["markers_removed"]["n_images"], t["lungs_only"]["n_images"]) for t in tested] == [
        (audit["n_marked"], audit["n_marked"])] * 3
    (result,) = json.loads((out / "cam_metrics.json").read_text())["models"]
    assert result["reliance"]["markers_removed"] is None and result["reliance"]["lungs_only"]["n_images"] == 8
    assert "<h2>Causal test: markers removed, lungs only</h2>" in page
    assert "no clearly different loss than the control" in page


@pytest.mark.slow
def test_configuration_errors_are_one_line(checkpoint, tmp_path):
    with pytest.raises(CxrcamError, match="say which model"):
        evaluate(compose_evaluate_config(), tmp_path)
    with pytest.raises(CxrcamError, match="known criteria"):
        evaluate(compose_evaluate_config(f"ckpt={checkpoint}", "patterns.COVID=[basal]"), tmp_path)
    with pytest.raises(CxrcamError, match="give shortcut_ckpt too"):
        evaluate(compose_evaluate_config(f"ckpt={checkpoint}", f"control_ckpt={checkpoint}"), tmp_path / "y")
    with pytest.raises(CxrcamError, match="carry no marker"):
        evaluate(compose_evaluate_config(f"ckpt={checkpoint}", f"shortcut_ckpt={checkpoint}"), tmp_path / "x")
    with pytest.raises(CxrcamError, match="marker"):
        ensure_synthetic(tmp_path / "bad", 2, 32, 0, marker={"Covid": 0.5})


@pytest.mark.child_process
def test_command_line_reports_time_and_exit_code(checkpoint, tmp_path):
    done = subprocess.run([sys.executable, "-m", "cxrcam.evaluate", f"ckpt={checkpoint}", *CHEAP,
                           f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"simple_cnn gradcam at features.3 \(8 images\): [\d.]+ s", done.stdout)
    assert (tmp_path / "report.html").is_file()
    bad = subprocess.run([sys.executable, "-m", "cxrcam.evaluate", "ckpt=/nonexistent.pt", "device=cpu",
                          f"hydra.run.dir={tmp_path / 'bad'}"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("cxrcam.evaluate: error:")


def test_layer_option_per_model():
    assert layers_for(None, "resnet50") == [None]  # the run's own layer
    assert layers_for("layer3.5", "resnet50") == ["layer3.5"]
    assert layers_for(["layer4.2", "layer3.5"], "resnet50") == ["layer4.2", "layer3.5"]
    assert layers_for({"resnet50": ["layer4.2", "layer3.5"], "simple_cnn": "features.2"}, "resnet50") == [
        "layer4.2", "layer3.5"]
    assert layers_for({"simple_cnn": "features.2"}, "resnet50") == [None]  # not named: its own layer
