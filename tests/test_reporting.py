"""What the figures and the report show: the numbers they were given, drawn and written where a reader
looks for them (the drawn artists are read back before the figure is closed)."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from cxrcam.reporting import figures
from cxrcam.reporting.evaluation_report import Document


@pytest.fixture()
def drawn(monkeypatch) -> list:
    """The figures the plotting functions save, kept open for inspection."""
    kept = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: kept.append(fig))
    return kept


def test_confusion_matrix_shows_counts_and_recall_shares(drawn, tmp_path):
    figures.plot_confusion_matrix([[3, 1], [0, 0]], ["COVID", "Normal"], tmp_path / "cm.png")
    ax = drawn[0].axes[0]
    assert [t.get_text() for t in ax.texts] == ["3\n(75%)", "1\n(25%)", "0\n(0%)", "0\n(0%)"]
    assert np.allclose(ax.images[0].get_array(), [[0.75, 0.25], [0, 0]])  # an empty row is 0, not NaN
    assert [t.get_color() for t in ax.texts] == ["white", "black", "black", "black"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["COVID", "Normal"] and ax.get_xlabel() == "predicted"


def test_roc_draws_each_class_present_against_the_rest(drawn, tmp_path):
    y_true = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array([[.8, .1, .1], [.4, .5, .1], [.3, .6, .1], [.1, .8, .1], [.2, .2, .6], [.5, .1, .4]])
    figures.plot_roc(y_true, probs, ["a", "b", "c"], tmp_path / "roc.png")
    ax = drawn[0].axes[0]
    curves = ax.lines[:-1]  # the last line is the chance diagonal
    assert [line.get_label() for line in curves] == ["a (AUC 0.875)", "b (AUC 1.000)", "c (AUC 1.000)"]
    for k, line in enumerate(curves):
        fpr, tpr, _ = roc_curve(y_true == k, probs[:, k])
        assert np.array_equal(line.get_xdata(), fpr) and np.array_equal(line.get_ydata(), tpr)
    drawn.clear()
    figures.plot_roc(np.array([0, 0, 1]), probs[:3], ["a", "b", "c"], tmp_path / "roc2.png")
    assert [line.get_label() for line in drawn[0].axes[0].lines[:-1]] == ["a (AUC 1.000)", "b (AUC 1.000)"]


def test_training_curves_plot_each_epochs_losses_and_scores(drawn, tmp_path):
    history = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.5 / e, "val_accuracy": 0.5 + e / 10,
                "val_balanced_accuracy": 0.4 + e / 10, "val_macro_f1": 0.3 + e / 10} for e in (1, 2, 3)]
    figures.plot_training_curves(history, tmp_path / "curves.png")
    ax_loss, ax_score = drawn[0].axes
    assert [list(line.get_ydata()) for line in ax_loss.lines] == [[1.0, 0.5, 1 / 3], [1.5, 0.75, 0.5]]
    assert [line.get_label() for line in ax_score.lines] == ["accuracy", "balanced_accuracy", "macro_f1"]
    assert [list(line.get_ydata()) for line in ax_score.lines] == [
        [r[k] for r in history] for k in ("val_accuracy", "val_balanced_accuracy", "val_macro_f1")]
    assert all(list(line.get_xdata()) == [1, 2, 3] for line in ax_loss.lines + ax_score.lines)


def test_report_text_is_escaped_in_html_and_kept_in_markdown(tmp_path):
    """Class names, paths and captions come from the user's files: in HTML they are text, never markup."""
    hostile = "<script>alert('x')</script> & \"q\""
    escaped = "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;q&quot;"
    png = tmp_path / "figures" / "f.png"
    png.parent.mkdir()
    png.write_bytes(b"\x89PNG fake")
    doc = Document(hostile)
    doc.heading(hostile)
    doc.para(hostile)
    doc.bullets([hostile, "plain"])
    doc.table([hostile, "n"], [[hostile, 3]])
    doc.figure(png, hostile)
    page = doc.html()
    assert "<script>" not in page and page.count(escaped) == 9  # title x2, heading, para, item, th, td, alt, caption
    assert f"alt='{escaped}'" in page and f"<figcaption>{escaped}</figcaption>" in page
    assert f"<img src='data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}'" in page
    assert f"<h2>{escaped}</h2>" in page and f"<li>{escaped}</li><li>plain</li>" in page
    assert f"<thead><tr><th>{escaped}</th><th>n</th></tr></thead><tbody><tr><td>{escaped}</td><td>3</td></tr>" in page
    assert doc.markdown(tmp_path).splitlines() == [
        f"# {hostile}", "", f"## {hostile}", "", hostile, "", f"- {hostile}", "- plain", "",
        f"| {hostile} | n |", "|---|---|", f"| {hostile} | 3 |", "",
        f"![{hostile}](figures/f.png)", "", f"*{hostile}*"]
