"""The compute ledger (pipeline/common/compute.py): what a stage used, the report's sum, cost and
emissions, and energy that is measured only where hardware power counters exist."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest

from pipeline.common import compute
from pipeline.common.errors import GovtuneError
from pipeline.common.params import ComputeParams

PRICES = ComputeParams(
    dir="reports/compute", report="reports/compute.json", energy="auto", country_iso_code="DEU",
    eur_per_cpu_hour=0.04, eur_per_gpu_hour=3.0, eur_per_kwh=0.25,
)  # fmt: skip


@pytest.fixture()
def no_counters(tmp_path, monkeypatch):
    """A machine without RAPL or an NVIDIA driver (like this one, made certain)."""
    monkeypatch.setattr(compute, "RAPL", tmp_path / "no-rapl")
    monkeypatch.setattr(compute, "NVIDIA", tmp_path / "no-nvidia")


def _busy(seconds: float) -> None:
    """Burns ``seconds`` of this thread's CPU time (not wall time: on a loaded machine a wall-clock
    loop got 0.18 s of CPU in 0.3 s, CI 2026-12-06)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        sum(i * i for i in range(1000))


def test_a_meter_records_time_memory_and_tokens(no_counters):
    meter = compute.Meter("split").start()
    _busy(0.3)
    meter.count_tokens(120)
    meter.count_tokens(5)
    ledger = compute.Meter.finish(meter)
    assert ledger["stage"] == "split" and ledger["wall_s"] >= 0.3
    assert 0.2 <= ledger["cpu_s"] <= ledger["wall_s"] + 0.5  # one busy thread
    assert ledger["peak_rss_mb"] > 10 and ledger["tokens"] == 125 and ledger["gpu_s"] is None
    assert ledger["energy"]["measured"] is False and ledger["energy"]["kwh"] is None
    assert "no readable RAPL energy files" in ledger["energy"]["reason"]


def test_energy_is_measured_only_by_counters(tmp_path, monkeypatch):
    """With RAPL, the CPU's energy counts; CodeCarbon's RAM estimate is shown apart, never summed in."""
    rapl = tmp_path / "intel-rapl"
    (rapl / "intel-rapl:0").mkdir(parents=True)
    (rapl / "intel-rapl:0" / "energy_uj").write_text("123\n")
    monkeypatch.setattr(compute, "RAPL", rapl)
    monkeypatch.setattr(compute, "NVIDIA", tmp_path / "no-nvidia")
    data = SimpleNamespace(cpu_energy=0.002, gpu_energy=0.0, ram_energy=0.0005)
    tracker = SimpleNamespace(stop=lambda: None, final_emissions_data=data)
    monkeypatch.setattr(compute, "_start_tracker", lambda country: tracker)  # the tracker itself: next test
    ledger = compute.Meter("finetune").start().finish()
    energy = ledger["energy"]
    assert energy["measured"] is True and energy["kwh"] == pytest.approx(0.002)
    assert energy["by_device"] == {"cpu": 0.002} and energy["sources"]["cpu"].startswith("RAPL via CodeCarbon")
    assert energy["estimated_kwh"] == {"ram": 0.0005} and "not counted" in energy["estimate_note"]
    assert ledger["machine"]["counters"] == {"cpu": "RAPL"}


@pytest.mark.slow
def test_codecarbon_runs_for_real_and_its_estimate_stays_an_estimate(no_counters):
    """``energy: codecarbon`` runs CodeCarbon's offline tracker here (no counters): its figure is
    recorded as an estimate, and the stage's energy stays "not measured"."""
    meter = compute.Meter("evaluate", energy="codecarbon", country_iso_code="FRA").start()
    _busy(1.0)
    energy = meter.finish()["energy"]
    assert energy["measured"] is False and energy["kwh"] is None and "no hardware power counters" in energy["reason"]
    assert energy["estimated_kwh"]["cpu"] > 0 and "CodeCarbon's estimate" in energy["estimate_note"]


def test_energy_off_measures_nothing(no_counters):
    assert compute.Meter("gate", energy="off").start().finish()["energy"] == {
        "measured": False, "kwh": None, "reason": "compute.energy is off",
    }  # fmt: skip


def _ledger(stage, cpu, kwh=None, gpu=None, tokens=None):
    energy = {"measured": kwh is not None, "kwh": kwh} | ({} if kwh is not None else {"reason": "no counters"})
    return {"stage": stage, "started": "2026-12-03T00:00:00+0000", "wall_s": cpu + 1, "cpu_s": cpu, "gpu_s": gpu,
            "peak_rss_mb": 100.0 + cpu, "tokens": tokens, "energy": energy, "machine": {}}  # fmt: skip


def test_the_sum_prices_cpu_gpu_and_measured_energy_and_says_what_is_missing():
    ledgers = {"scrub": _ledger("scrub", 3600, kwh=0.1), "finetune": _ledger("finetune", 7200, gpu=1800, tokens=5000),
               "gate": None}  # fmt: skip
    out = compute.summarize(ledgers, PRICES, {"kg_co2e_per_kwh": 0.4, "source": "test"})
    t, cost = out["totals"], out["cost"]
    assert out["missing"] == ["gate"] and set(out["stages"]) == {"scrub", "finetune"}
    assert t["cpu_s"] == 10800 and t["gpu_s"] == 1800 and t["tokens"] == 5000 and t["peak_rss_mb"] == 7300
    assert t["energy_kwh"] == pytest.approx(0.1) and t["energy_complete"] is False
    assert t["energy_not_measured_stages"] == ["finetune"]
    assert cost["cpu_eur"] == pytest.approx(3 * 0.04) and cost["gpu_eur"] == pytest.approx(0.5 * 3.0)
    assert cost["energy_eur"] == pytest.approx(0.025) and cost["total_eur"] == pytest.approx(0.12 + 1.5 + 0.025)
    assert out["emissions"]["kg_co2e"] == pytest.approx(0.04)


def test_without_any_measured_energy_there_is_no_energy_figure():
    out = compute.summarize({"split": _ledger("split", 10)}, PRICES, {"kg_co2e_per_kwh": 0.4, "source": "test"})
    assert out["totals"]["energy_kwh"] is None and out["cost"]["energy_eur"] is None
    assert out["emissions"]["kg_co2e"] is None and out["emissions"]["scope"].startswith("not measured")


def test_carbon_intensity_from_codecarbons_offline_data_or_the_override():
    germany = compute.carbon_intensity("DEU", None)
    assert 0.1 < germany["kg_co2e_per_kwh"] < 1.0 and "Germany" in germany["source"]
    assert compute.carbon_intensity("DEU", 0.05) == {
        "kg_co2e_per_kwh": 0.05,
        "source": "params.yaml compute.kg_co2e_per_kwh",
    }
    with pytest.raises(GovtuneError, match="compute.country_iso_code"):
        compute.carbon_intensity("XXX", None)


def test_stage_run_writes_the_ledger_only_when_the_stage_succeeds(tmp_path, no_counters):
    from pipeline.common.outputs import read_output
    from pipeline.common.params import TrackingParams
    from pipeline.common.tracking import stage_run

    off = TrackingParams(
        enabled=False, uri="sqlite:///x.db", experiment="x", artifact_location="x", registered_model="x"
    )
    cfg = PRICES.model_copy(update={"dir": tmp_path})
    with stage_run(off, "split", [], [], cfg) as tracked:
        tracked.count_tokens(7)
    ledger = read_output("stage_compute", tmp_path / "split.json")
    assert ledger["tokens"] == 7 and ledger["energy"]["measured"] is False
    with pytest.raises(RuntimeError), stage_run(off, "split", [], [], cfg):
        raise RuntimeError("the stage failed")
    assert not (tmp_path / "split.json").exists()  # no ledger of an earlier run outlives a failed one


def test_forward_tokens_are_counted_without_padding():
    import torch

    class Model(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None):
            return input_ids

    seen = []
    layer = Model()
    handle = compute.count_forward_tokens(layer, seen.append)
    layer(input_ids=torch.ones((2, 5), dtype=torch.long), attention_mask=torch.tensor([[1] * 5, [0, 0, 1, 1, 1]]))
    layer(input_ids=torch.ones((2, 1), dtype=torch.long), attention_mask=torch.ones((2, 6)))  # one generated step
    handle.remove()
    layer(input_ids=torch.ones((2, 5), dtype=torch.long))
    assert seen == [8, 2]


def test_the_compute_report_model_refuses_an_unknown_key(tmp_path):
    from pipeline.common.outputs import save_output

    good = compute.summarize({"split": _ledger("split", 10)}, PRICES, {"kg_co2e_per_kwh": 0.4, "source": "test"})
    save_output("compute", tmp_path / "c.json", good)
    assert json.loads((tmp_path / "c.json").read_text())["totals"]["cpu_s"] == 10
    with pytest.raises(GovtuneError, match="totals"):
        save_output("compute", tmp_path / "bad.json", good | {"totals": good["totals"] | {"joules": 1}})
