"""data=csv and data=rsna_pneumonia: single-label datasets described by a CSV file, read into the
same (path, class) items as class folders, with each wrong value stopped in one line."""

from __future__ import annotations

import copy
import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import compose_config, write_dicom
from cxrcam.config import validate_train_config
from cxrcam.data.split import stratified_split
from cxrcam.data.table import table_images
from cxrcam.errors import CxrcamError
from cxrcam.train import check_resumable, make_split, train

CLASSES = ["Normal", "Pneumonia"]
TINY = ["data.num_workers=0", "data.image_size=32", "data.batch_size=4", "trainer.epochs=1", "device=cpu",
        "model=simple_cnn", "optim.lr=1e-3"]


def _png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.random.default_rng(seed).random((40, 44)) * 255).astype(np.uint8)).save(path)
    return path


def _dcm(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_dicom(path, (np.random.default_rng(seed).random((40, 40)) * 4095).astype(np.uint16))


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _labelled_pngs(root: Path, labels: list[str]) -> list[list[str]]:
    """One PNG per label under ``root/images/``, as CSV rows [relative path, label]."""
    rows = [[f"images/{i:02d}.png", label] for i, label in enumerate(labels)]
    for i, (name, _) in enumerate(rows):
        _png(root / name, i)
    return rows


def _with_splits(rows: list[list[str]], splits: list[str]) -> list[list[str]]:
    return [[*row, split] for row, split in zip(rows, splits, strict=True)]


def _read(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _rsna_tree(root: Path, positives: int = 5, negatives: int = 6) -> list[tuple[str, str]]:
    """RSNA's layout in miniature: ids with one row per box (positives have 1-2 boxes, a negative one
    row with empty box fields), DICOM images named <patientId>.dcm; (id, class) of each image."""
    rows, images = [], []
    for i in range(positives):
        pid = f"p{i:02d}-{i * 7919 % 1000:03d}"
        rows += [[pid, 100 + 10 * box, 200, 50, 60, 1] for box in range(1 + i % 2)]
        images.append((pid, "Lung_Opacity"))
    for i in range(negatives):
        pid = f"n{i:02d}-{i * 104729 % 1000:03d}"
        rows.append([pid, "", "", "", "", 0])
        images.append((pid, "Normal"))
    _write_csv(root / "stage_2_train_labels.csv", ["patientId", "x", "y", "width", "height", "Target"], rows)
    for i, (pid, _) in enumerate(images):
        _dcm(root / "stage_2_train_images" / f"{pid}.dcm", i)
    return images


# --- reading the table -----------------------------------------------------------------------------

def test_paths_are_relative_to_the_image_dir_and_an_absolute_path_stays(tmp_path):
    rows = _labelled_pngs(tmp_path / "set", ["Normal", "Pneumonia", "Normal"])
    outside = _png(tmp_path / "elsewhere" / "x.png", 9)
    table = _write_csv(tmp_path / "lists" / "labels.csv", ["path", "label"], [*rows, [str(outside), "Pneumonia"]])
    items, splits = table_images(table, tmp_path / "set", CLASSES)
    assert items == [(tmp_path / "set/images/00.png", "Normal"), (tmp_path / "set/images/01.png", "Pneumonia"),
                     (tmp_path / "set/images/02.png", "Normal"), (outside, "Pneumonia")]
    assert splits is None


def test_without_an_image_dir_paths_are_relative_to_the_csv_folder(tmp_path):
    rows = _labelled_pngs(tmp_path, ["Pneumonia", "Normal"])
    items, _ = table_images(_write_csv(tmp_path / "labels.csv", ["path", "label"], rows), None, CLASSES)
    assert items == [(tmp_path / "images/00.png", "Pneumonia"), (tmp_path / "images/01.png", "Normal")]


def test_columns_and_suffix_are_configurable_and_dicom_ids_get_their_suffix(tmp_path):
    for i, pid in enumerate(("a1", "b2", "c3")):
        _dcm(tmp_path / "dicom" / f"{pid}.dcm", i)
    table = _write_csv(tmp_path / "t.csv", ["Finding", "Id"], [["Normal", "a1"], ["Pneumonia", "b2"], ["Normal", "c3"]])
    items, _ = table_images(table, tmp_path / "dicom", CLASSES, path_column="Id", label_column="Finding",
                            path_suffix=".dcm")
    assert items == [(tmp_path / "dicom/a1.dcm", "Normal"), (tmp_path / "dicom/b2.dcm", "Pneumonia"),
                     (tmp_path / "dicom/c3.dcm", "Normal")]


def test_rows_of_one_image_that_agree_collapse_to_one_image(tmp_path):
    rows = _labelled_pngs(tmp_path, ["Pneumonia", "Normal"])
    table = _write_csv(tmp_path / "t.csv", ["path", "label"],
                       [rows[0], rows[1], rows[0], ["./" + rows[0][0], "Pneumonia"]])
    items, _ = table_images(table, tmp_path, CLASSES)
    assert items == [(tmp_path / "images/00.png", "Pneumonia"), (tmp_path / "images/01.png", "Normal")]


def test_conflicting_labels_of_one_image_stop_with_one_line_naming_it(tmp_path):
    rows = _labelled_pngs(tmp_path, ["Pneumonia", "Normal"])
    table = _write_csv(tmp_path / "t.csv", ["path", "label"], [*rows, [rows[0][0], "Normal"]])
    with pytest.raises(CxrcamError) as info:
        table_images(table, tmp_path, CLASSES)
    assert str(info.value) == (f"image {tmp_path / 'images/00.png'} has conflicting labels 'Pneumonia' (line 2) and "
                               f"'Normal' (line 4) in {table}; give each image one label")


def test_labels_outside_the_classes_are_left_out_with_one_warning_counting_each(tmp_path, caplog):
    labels = ["Normal", "Effusion", "Pneumonia", "", "Effusion", "Normal", "Mass", "Effusion"]
    rows = _labelled_pngs(tmp_path, labels)
    table = _write_csv(tmp_path / "t.csv", ["path", "label"], [*rows, rows[1]])  # a repeated row counts once
    with caplog.at_level(logging.WARNING, logger="cxrcam.data.table"):
        items, _ = table_images(table, tmp_path, CLASSES)
    assert items == [(tmp_path / "images/00.png", "Normal"), (tmp_path / "images/02.png", "Pneumonia"),
                     (tmp_path / "images/05.png", "Normal")]
    assert caplog.messages == [f"left out 5 image(s) of {table} whose label is not in data.classes="
                               "['Normal', 'Pneumonia']: {'': 1, 'Effusion': 3, 'Mass': 1}"]


def test_all_labels_in_the_classes_log_nothing(tmp_path, caplog):
    table = _write_csv(tmp_path / "t.csv", ["path", "label"], _labelled_pngs(tmp_path, CLASSES))
    with caplog.at_level(logging.DEBUG, logger="cxrcam.data.table"):
        table_images(table, tmp_path, CLASSES)
    assert caplog.messages == []


def test_a_multi_label_value_is_refused_in_one_line(tmp_path):
    rows = _labelled_pngs(tmp_path, ["Normal", "Pneumonia|Effusion"])
    table = _write_csv(tmp_path / "t.csv", ["path", "Finding Labels"], rows)
    with pytest.raises(CxrcamError) as info:
        table_images(table, tmp_path, CLASSES, label_column="Finding Labels")
    assert str(info.value) == (f"line 3 of {table} gives image {tmp_path / 'images/01.png'} the multi-label value "
                               "'Pneumonia|Effusion' in column 'Finding Labels'; cxrcam trains single-label "
                               "classifiers: keep one label per image (or map such values with data.label_map)")


@pytest.mark.parametrize("label_map", [{0: "Normal", 1: "Pneumonia"}, {"0": "Normal", "1": "Pneumonia"},
                                       {1: "Pneumonia", 0: "Normal", "Pneumonia|Effusion": "Pneumonia"}])
def test_label_map_maps_raw_labels_as_strings_before_anything_else(tmp_path, label_map):
    """0 and "0" alike; a mapped multi-label value is one label; an unmapped raw label stays as it is."""
    rows = _labelled_pngs(tmp_path, ["0", "1", "Normal", "Pneumonia|Effusion" if len(label_map) == 3 else "1"])
    items, _ = table_images(_write_csv(tmp_path / "t.csv", ["path", "label"], rows), tmp_path, CLASSES,
                            label_map=label_map)
    assert [label for _, label in items] == ["Normal", "Pneumonia", "Normal", "Pneumonia"]


def test_the_split_column_gives_each_image_its_official_split(tmp_path):
    rows = _labelled_pngs(tmp_path, ["Normal", "Pneumonia", "Normal", "Effusion"])
    split = ["train", "test", "val", "train"]
    table = _write_csv(tmp_path / "t.csv", ["path", "label", "fold"],
                       [*_with_splits(rows, split), [*rows[0], "train"]])
    items, splits = table_images(table, tmp_path, CLASSES, split_column="fold")
    assert [p for p, _ in items] == [tmp_path / f"images/0{i}.png" for i in range(3)]
    assert splits == {tmp_path / "images/00.png": "train", tmp_path / "images/01.png": "test",
                      tmp_path / "images/02.png": "val"}


def test_a_split_value_outside_train_val_test_is_one_line_naming_it(tmp_path):
    rows = _labelled_pngs(tmp_path, ["Normal", "Pneumonia"])
    table = _write_csv(tmp_path / "t.csv", ["path", "label", "fold"], [[*rows[0], "train"], [*rows[1], "validate"]])
    with pytest.raises(CxrcamError) as info:
        table_images(table, tmp_path, CLASSES, split_column="fold")
    assert str(info.value) == (f"line 3 of {table} puts image {tmp_path / 'images/01.png'} in split 'validate' "
                               "(column 'fold'); use train, val, test")


def test_rows_of_one_image_in_two_splits_stop_with_one_line(tmp_path):
    rows = _labelled_pngs(tmp_path, ["Normal", "Pneumonia"])
    table = _write_csv(tmp_path / "t.csv", ["path", "label", "fold"],
                       [[*rows[0], "train"], [*rows[1], "val"], [*rows[0], "test"]])
    with pytest.raises(CxrcamError) as info:
        table_images(table, tmp_path, CLASSES, split_column="fold")
    assert str(info.value) == (f"image {tmp_path / 'images/00.png'} is in split 'train' (line 2) and 'test' "
                               f"(line 4) of {table}; give each image one split")


def _refusal(tmp_path: Path, content: str | bytes, **options) -> str:
    rows = _labelled_pngs(tmp_path, CLASSES)
    table = tmp_path / "t.csv"
    if isinstance(content, bytes):
        table.write_bytes(content)
    else:
        table.write_text(content.format(a=rows[0][0], b=rows[1][0]))
    with pytest.raises(CxrcamError) as info:
        table_images(table, tmp_path, CLASSES, **options)
    return str(info.value).replace(str(table), "<csv>").replace(str(tmp_path), "<dir>")


@pytest.mark.parametrize("content, options, message", [
    ("", {}, "data.csv=<csv> is empty; it needs a header row naming its columns, then one row per image"),
    ("path,label\n", {}, "data.csv=<csv> has a header but no rows; it needs one row per image"),
    (b"path,label\n\xff\xfe,x\n", {}, "data.csv=<csv> is not a UTF-8 CSV file ('utf-8' codec can't decode byte 0xff "
     "in position 11: invalid start byte); export it as CSV"),
    ("file,label\n{a},Normal\n", {}, "data.path_column='path' is not a column of <csv>; its columns: "
     "['file', 'label']"),
    ("path,Target\n{a},Normal\n", {}, "data.label_column='label' is not a column of <csv>; its columns: "
     "['path', 'Target']"),
    ("path,label\n{a},Normal\n", {"split_column": "split"},
     "data.split_column='split' is not a column of <csv>; its columns: ['path', 'label']"),
    ("path,label\n{a},Normal\n ,Pneumonia\n", {}, "line 3 of <csv> has no image in column 'path'; fill it in or "
     "delete the row"),
    ("path,label\n{a},Normal\n{b},normal\n", {}, "no image in <csv> has the label(s) ['Pneumonia'] of data.classes; "
     "its labels (images): {'Normal': 1, 'normal': 1}. Set data.classes, data.label_column or data.label_map"),
    ("path,label\n{a},Normal\n{b},Pneumonia\n", {"path_suffix": ".dcm"},
     "none of the 2 images <csv> lists exists (the first would be <dir>/images/00.png.dcm); check data.root (or "
     "data.image_dir, the folder its paths are relative to) and data.path_suffix"),
])
def test_a_bad_csv_is_one_line_saying_what_to_do(tmp_path, content, options, message):
    assert _refusal(tmp_path, content, **options) == message


def test_a_missing_csv_file_says_so(tmp_path):
    with pytest.raises(CxrcamError) as info:
        table_images(tmp_path / "labels.csv", tmp_path, CLASSES)
    assert str(info.value) == (f"data.csv={tmp_path / 'labels.csv'} does not exist or is not a file; point it at the "
                               "CSV that lists the images")


def test_a_spreadsheets_byte_order_mark_padding_and_short_rows_are_read(tmp_path):
    """A row without a label is one with an empty label: left out like any label outside the classes."""
    rows = _labelled_pngs(tmp_path, ["Normal", "Pneumonia", "Normal"])
    table = tmp_path / "t.csv"
    table.write_text(f"path,label,note\n {rows[0][0]} , Normal\n{rows[1][0]},Pneumonia,x\n{rows[2][0]}\n",
                     encoding="utf-8-sig")
    items, _ = table_images(table, tmp_path, CLASSES)
    assert items == [(tmp_path / "images/00.png", "Normal"), (tmp_path / "images/01.png", "Pneumonia")]


# --- the split a run trains on ---------------------------------------------------------------------

def _csv_config(table: Path, *extra: str) -> dict:
    return compose_config("train", "data=csv", f"data.csv={table}", f"data.classes=[{','.join(CLASSES)}]",
                          "data.val_fraction=0.2", "data.test_fraction=0.2", *TINY, *extra)


def test_make_split_draws_a_stratified_split_of_the_csvs_images(tmp_path):
    rows = _labelled_pngs(tmp_path / "set", ["Normal", "Pneumonia"] * 5)
    table = _write_csv(tmp_path / "set/labels.csv", ["path", "label"], rows)
    (tmp_path / "run").mkdir()
    split, skipped = make_split(_csv_config(table)["data"], 0, tmp_path / "run", None, None)
    expected = stratified_split([(tmp_path / "set" / p, c) for p, c in rows], 0.2, 0.2, 0)
    assert split == expected and skipped == []
    assert [(r["split"], r["label"]) for r in split].count(("test", "Normal")) == 1
    assert _read(tmp_path / "run/split.csv") == expected


@pytest.mark.parametrize("on_bad_image", ["skip", "error"])
def test_a_missing_file_is_an_unreadable_image(tmp_path, caplog, on_bad_image):
    rows = _labelled_pngs(tmp_path, ["Normal", "Pneumonia"] * 4)
    table = _write_csv(tmp_path / "labels.csv", ["path", "label", "split"],
                       _with_splits(rows, ["train"] * 4 + ["val"] * 2 + ["test"] * 2))
    missing = tmp_path / rows[2][0]
    missing.unlink()
    data = _csv_config(table, "data.split_column=split", f"data.on_bad_image={on_bad_image}")["data"]
    (tmp_path / "run").mkdir()
    if on_bad_image == "error":
        with pytest.raises(CxrcamError) as info:
            make_split(data, 0, tmp_path / "run", None, None)
        assert str(info.value) == (f"cannot read image {missing}: no such file "
                                   "(data.on_bad_image=skip leaves such files out)")
        return
    with caplog.at_level(logging.WARNING):
        split, skipped = make_split(data, 0, tmp_path / "run", None, None)
    assert skipped == [str(missing)]
    assert f"skipping cannot read image {missing}: no such file" in caplog.messages
    assert [(Path(r["path"]).name, r["label"], r["split"]) for r in split] == [
        ("00.png", "Normal", "train"), ("01.png", "Pneumonia", "train"), ("03.png", "Pneumonia", "train"),
        ("04.png", "Normal", "val"), ("05.png", "Pneumonia", "val"), ("06.png", "Normal", "test"),
        ("07.png", "Pneumonia", "test")]


def test_an_official_split_without_a_class_in_one_split_names_the_split_column(tmp_path):
    rows = _labelled_pngs(tmp_path, ["Normal", "Pneumonia", "Normal", "Normal"])
    table = _write_csv(tmp_path / "labels.csv", ["path", "label", "split"],
                       _with_splits(rows, ["train", "train", "val", "test"]))
    (tmp_path / "run").mkdir()
    with pytest.raises(CxrcamError) as info:
        make_split(_csv_config(table, "data.split_column=split")["data"], 0, tmp_path / "run", None, None)
    assert str(info.value) == ("the val split has no image of class(es) ['Pneumonia']; add images or change "
                               "data.split_column='split' (null: draw a split)")


# --- end to end ------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.child_process
def test_cli_trains_on_a_csv_with_its_official_split_and_skips_a_missing_file(tmp_path):
    """python -m cxrcam.train data=csv: PNG and DICOM rows, ids with a label map, one box-like
    repeated row, one label outside the classes, one file that was never there."""
    root = tmp_path / "set"
    plan = [("train", "0"), ("train", "1")] * 3 + [("val", "0"), ("val", "1"), ("test", "0"), ("test", "1")]
    rows = []
    for i, (split, raw) in enumerate(plan):
        name = f"img{i:02d}"
        (_dcm(root / "images" / f"{name}.dcm", i) if i % 3 == 0 else _png(root / "images" / f"{name}.png", i))
        rows.append([f"{name}.dcm" if i % 3 == 0 else f"{name}.png", raw, split])
    rows += [rows[1], ["gone.png", "1", "train"], ["img99.png", "2", "train"]]
    table = _write_csv(tmp_path / "meta" / "labels.csv", ["file", "target", "fold"], rows)
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "cxrcam.train", "data=csv", f"data.csv={table}",
                             f"data.root={root / 'images'}", "data.path_column=file", "data.label_column=target",
                             "data.split_column=fold", "data.label_map={0:Normal,1:Pneumonia}",
                             f"data.classes=[{','.join(CLASSES)}]", *TINY, f"hydra.run.dir={run_dir}"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    images = root / "images"
    assert _read(run_dir / "split.csv") == [
        {"path": str(images / r[0]), "label": CLASSES[int(r[1])], "split": r[2]} for r in rows[:10]]
    report = json.loads((run_dir / "test_metrics.json").read_text())
    assert report["skipped_images"] == [str(images / "gone.png")] and report["n_images"] == 2
    assert f"left out 1 image(s) of {table} whose label is not in data.classes=['Normal', 'Pneumonia']: {{'2': 1}}" \
        in result.stdout + result.stderr


@pytest.mark.slow
def test_data_rsna_pneumonia_trains_on_rsnas_own_layout(tmp_path):
    """data=rsna_pneumonia data.root=<the download>: one row per box collapses to one image per
    patientId, Target 0/1 becomes Normal/Lung_Opacity, images are <patientId>.dcm."""
    images = _rsna_tree(tmp_path / "rsna")
    cfg = compose_config("train", "data=rsna_pneumonia", f"data.root={tmp_path / 'rsna'}", "data.val_fraction=0.2",
                         "data.test_fraction=0.2", *TINY)
    report = train(cfg, tmp_path / "run")
    folder = tmp_path / "rsna" / "stage_2_train_images"
    expected = stratified_split([(folder / f"{pid}.dcm", label) for pid, label in images], 0.2, 0.2, 0)
    assert _read(tmp_path / "run/split.csv") == expected
    assert len(expected) == 11 and report["class_names"] == ["Normal", "Lung_Opacity"]
    assert report["n_images"] == 2 and report["skipped_images"] == []


@pytest.mark.slow
def test_a_csv_run_resumes_from_another_csv_location_but_not_with_another_label_map(tmp_path):
    rows = _labelled_pngs(tmp_path / "set", ["0", "1"] * 5)
    table = _write_csv(tmp_path / "set/labels.csv", ["path", "label"], rows)
    moved = _write_csv(tmp_path / "copy/labels.csv", ["path", "label"], rows)
    as_trained = ("data.label_map={0:Normal,1:Pneumonia}",)
    train(_csv_config(table, *as_trained), tmp_path / "part")
    last = tmp_path / "part/checkpoints/last.pt"
    report = train(_csv_config(moved, *as_trained, f"data.root={tmp_path / 'set'}", "trainer.epochs=2",
                               f"resume={last}"), tmp_path / "resumed")
    assert report["epochs_run"] == 2
    assert _read(tmp_path / "resumed/split.csv") == _read(tmp_path / "part/split.csv")
    with pytest.raises(CxrcamError, match="^cannot resume with data.label_map.0='Pneumonia': the checkpoint was "
                                          "trained with data.label_map.0='Normal'"):
        train(_csv_config(table, "data.label_map={0:Pneumonia,1:Normal}", "trainer.epochs=2", f"resume={last}"),
              tmp_path / "refused")


# --- configuration ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def csv_config() -> dict:
    return compose_config("train", "data=csv", "data.csv=labels.csv", "data.classes=[Normal,Pneumonia]")


def test_data_csv_composes_with_its_documented_defaults(csv_config):
    data = csv_config["data"]
    validate_train_config(csv_config)
    assert {k: data[k] for k in ("name", "root", "image_dir", "path_column", "label_column", "path_suffix",
                                 "split_column", "label_map")} == {
        "name": "csv", "root": None, "image_dir": None, "path_column": "path", "label_column": "label",
        "path_suffix": "", "split_column": None, "label_map": None}


def test_data_rsna_pneumonia_points_at_rsnas_files_below_data_root():
    cfg = compose_config("train", "data=rsna_pneumonia", "data.root=/data/rsna")
    validate_train_config(cfg)
    data = cfg["data"]
    assert {k: data[k] for k in ("name", "csv", "image_dir", "path_column", "label_column", "path_suffix",
                                 "split_column", "label_map", "classes")} == {
        "name": "rsna_pneumonia", "csv": "/data/rsna/stage_2_train_labels.csv",
        "image_dir": "/data/rsna/stage_2_train_images", "path_column": "patientId", "label_column": "Target",
        "path_suffix": ".dcm", "split_column": None, "label_map": {0: "Normal", 1: "Lung_Opacity"},
        "classes": ["Normal", "Lung_Opacity"]}


@pytest.mark.parametrize("key, value, message", [
    ("csv", None, "data.csv=None must be a non-empty string"),
    ("csv", "", "data.csv='' must be a non-empty string"),
    ("path_column", "", "data.path_column='' must be a non-empty string"),
    ("label_column", 3, "data.label_column=3 must be a non-empty string"),
    ("root", 5, "data.root=5 must be a folder, or null: the CSV's folder"),
    ("image_dir", ["a"], "data.image_dir=['a'] must be a folder, or null: the CSV's folder"),
    ("path_suffix", None, "data.path_suffix=None must be a string, e.g. .dcm, or '' (none)"),
    ("split_column", "", "data.split_column='' must be a column name, or null: draw a stratified split"),
    ("split_column", 1, "data.split_column=1 must be a column name, or null: draw a stratified split"),
    ("label_map", ["Normal"], "data.label_map=['Normal'] must map raw labels to class names, e.g. "
     "{0: Normal, 1: Lung_Opacity}, or be null"),
    ("label_map", {0: 1}, "data.label_map={0: 1} must map raw labels to class names, e.g. "
     "{0: Normal, 1: Lung_Opacity}, or be null"),
    ("label_map", {0: "Normal", 1: "Pneumonia", 2: "Opacity", 3: "Mass"},
     "data.label_map maps to ['Mass', 'Opacity'], not in data.classes=['Normal', 'Pneumonia']; map raw labels to "
     "class names only"),
])
def test_a_bad_csv_option_is_refused_with_its_one_line_message(csv_config, key, value, message):
    cfg = copy.deepcopy(csv_config)
    cfg["data"][key] = value
    with pytest.raises(CxrcamError) as info:
        validate_train_config(cfg)
    assert str(info.value) == message


def test_the_csv_options_accept_their_edge_values(csv_config):
    cfg = copy.deepcopy(csv_config)
    cfg["data"].update(root="/data", image_dir="/data/images", path_suffix=".dcm", split_column="fold",
                       label_map={}, path_column="p", label_column="l")
    validate_train_config(cfg)


def test_a_folder_config_is_not_judged_by_the_csv_checks():
    validate_train_config(compose_config("train", "data=folder", "data.root=/x", "data.classes=[A,B]"))


@pytest.mark.parametrize("key, value", [("data.csv", "/elsewhere/labels.csv"), ("data.root", "/elsewhere"),
                                        ("data.image_dir", "/elsewhere/images")])
def test_resume_may_move_the_csv_and_its_images(csv_config, key, value):
    section, name = key.split(".")
    asked = copy.deepcopy(csv_config)
    asked[section][name] = value
    check_resumable({"training": {}, "meta": {"config": csv_config}}, {**asked, "resume": "last.pt"})


@pytest.mark.parametrize("key, value, refused", [
    ("path_column", "file", "data.path_column='file': the checkpoint was trained with data.path_column='path'"),
    ("label_column", "Target", "data.label_column='Target': the checkpoint was trained with data.label_column='label'"),
    ("path_suffix", ".dcm", "data.path_suffix='.dcm': the checkpoint was trained with data.path_suffix=''"),
    ("split_column", "fold", "data.split_column='fold': the checkpoint was trained with data.split_column=None"),
    ("label_map", {0: "Normal"}, "data.label_map=(not set): the checkpoint was trained with data.label_map=None"),
])
def test_resume_refuses_another_reading_of_the_csv(csv_config, key, value, refused):
    asked = copy.deepcopy(csv_config)
    asked["data"][key] = value
    with pytest.raises(CxrcamError) as info:
        check_resumable({"training": {}, "meta": {"config": csv_config}}, {**asked, "resume": "last.pt"})
    assert str(info.value).startswith(f"cannot resume with {refused}, and a resumed run continues its trajectory")
