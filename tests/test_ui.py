"""The MLflow UI in a real browser (headless Debian chromium driven by playwright; nothing downloaded):
what a researcher must see after a tiny study + `make pareto` + `make ensemble` + `make predict`.
Screenshots go to reports/ui/. Run with `make ui-check` (or `pytest -m slow tests/test_ui.py`)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from mtl.__main__ import main
from tests.servers import ensure_chromium, mlflow_ui, optuna_dashboard
from tests.test_tune import STUDY

SHOTS = Path(__file__).resolve().parents[1] / "reports" / "ui"
ML = "workflowType=machine_learning"  # the UI's "Model training" view (its default is the GenAI one)


def _text(page) -> str:
    return page.inner_text("body")


def _close_assistant(page) -> None:
    """The MLflow Assistant side panel opens by default and hides a third of the page."""
    for b in page.get_by_role("button").all():
        label = (b.get_attribute("aria-label") or "").lower()
        if "close" in label and b.is_visible():
            try:
                b.click(timeout=2000)
            except Exception:
                pass
            return


@pytest.mark.slow
def test_ui_shows_trials_charts_models_and_figures(tmp_path, fgo_small, monkeypatch):
    chromium = ensure_chromium()
    import playwright.sync_api as playwright  # a dev dependency: installed with the project
    db = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "tiny.py").write_text(STUDY.format(manifest=fgo_small))
    for cmd in (["tune", "tiny", "--trials", "3"], ["pareto", "tiny"], ["ensemble", "tiny"], ["predict", "tiny", "-n", "2"]):
        assert main(cmd) == 0, cmd
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("tiny")
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"
    parent = client.search_runs([exp.experiment_id], "tags.`mtl.role` = 'parent'")[0].info.run_id
    SHOTS.mkdir(parents=True, exist_ok=True)

    with mlflow_ui(f"sqlite:///{db}", tmp_path / "mlartifacts", tmp_path) as url, \
            playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        base = f"{url}/#/experiments/{exp.experiment_id}"

        # the runs table: every trial is a row (not folded under the parent)
        page.goto(f"{base}/runs?{ML}")
        page.get_by_text("trial-2").first.wait_for(timeout=60000)
        _close_assistant(page)
        text = _text(page)
        assert all(f"trial-{i}" in text for i in range(3)), text[:2000]
        page.screenshot(path=SHOTS / "runs.png")

        # the chart view: one val/<task>/<metric> chart per task across the trials (the search box narrows
        # the view to the primary metrics: `/acc` and `/f1`)
        page.goto(f"{base}/runs?{ML}&compareRunsMode=CHART")
        search = page.get_by_placeholder("Search metric charts")
        search.wait_for(timeout=60000)
        _close_assistant(page)
        search.fill("val/gender/acc")
        page.get_by_text("val/gender", exact=True).first.wait_for(timeout=30000)
        page.wait_for_timeout(1500)
        text = _text(page)
        assert "val/gender" in text and "val/region" not in text, text[:3000]
        # each trial is named once in the run list and again in the legend of every chart drawn for it
        assert all(text.count(f"trial-{i}") >= 2 for i in range(3)), text[:3000]
        page.screenshot(path=SHOTS / "chart_val_gender_acc.png")
        search.fill("val/")
        page.wait_for_timeout(1500)
        text = _text(page)
        assert all(f"val/{t}" in text for t in ("gender", "region", "fighting_style", "alignment", "colors"))
        assert "ensemble" not in text  # non-trial runs are the parent's children: not in the trials' charts
        page.screenshot(path=SHOTS / "charts.png")

        # the registry: the study's model with its best-<task> aliases and the ensemble
        page.goto(f"{url}/#/models/tiny")
        page.get_by_text("best-gender").first.wait_for(timeout=60000)
        text = _text(page)
        assert all(f"best-{t}" in text for t in ("gender", "region", "fighting_style", "alignment", "colors"))
        assert "ensemble" in text
        page.screenshot(path=SHOTS / "models.png")

        # the parent run's figures and tables (what reports/ holds)
        page.goto(f"{base}/runs/{parent}/artifacts?{ML}")
        page.get_by_text("pareto", exact=True).first.wait_for(timeout=60000)
        _close_assistant(page)
        page.get_by_text("pareto", exact=True).first.click()
        page.get_by_text("pareto_front.png").first.click()
        page.locator("img[src^='blob:']").first.wait_for(state="attached", timeout=30000)  # the preview
        page.wait_for_timeout(1500)
        text = _text(page)
        assert all(f in text for f in ("hypervolume.png", "importances.png", "val_curves.png", "front.json"))
        page.screenshot(path=SHOTS / "parent_figures.png")

        # optuna-dashboard (`make dashboard`) over the study's journal: its Pareto-front plot, objectives by name
        with optuna_dashboard("optuna/tiny.log", tmp_path) as durl:
            page.goto(f"{durl}/dashboard/studies/0")
            page.get_by_text("Pareto Front").first.wait_for(timeout=60000)
            page.locator(".js-plotly-plot").first.wait_for(timeout=60000)
            page.wait_for_timeout(2000)
            text = _text(page)
            assert "tiny" in text and "val/gender/acc" in text, text[:3000]
            page.get_by_text("Pareto Front").first.scroll_into_view_if_needed()
            page.screenshot(path=SHOTS / "dashboard_pareto.png", full_page=True)
        browser.close()
    assert all((SHOTS / f).stat().st_size > 10_000 for f in ("runs.png", "chart_val_gender_acc.png", "charts.png",
                                                              "models.png", "parent_figures.png", "dashboard_pareto.png"))
