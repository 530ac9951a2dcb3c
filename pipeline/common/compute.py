"""What a stage used: wall time, CPU and GPU time, peak memory, tokens, and energy.

Every stage measures itself inside :func:`pipeline.common.tracking.stage_run` with a
:class:`Meter` and writes the figures to ``<compute.dir>/<stage>.json`` (the ledger; a DVC
metric of the stage) and as ``compute/*`` metrics on its MLflow run. The report stage adds
them up into ``reports/compute.json`` with the cost and emissions (:func:`summarize`).

Energy is taken only from hardware power counters, through CodeCarbon's offline tracker
(nothing is fetched): the CPU package's RAPL counters (``/sys/class/powercap/intel-rapl``)
and an NVIDIA GPU's NVML. A machine without them gets "not measured" and the reason, never a
figure from a table or a default wattage (CodeCarbon's fallback). ``compute.energy:
codecarbon`` runs the tracker anyway and reports its figure as an *estimate*, apart from
measured energy.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.common.errors import GovtuneError

log = logging.getLogger(__name__)

RAPL = Path("/sys/class/powercap/intel-rapl")
NVIDIA = Path("/proc/driver/nvidia/gpus")
# the stages that make the model (the report adds them up; monitor runs after, on new data)
MAKING = ("base_model", "validate", "scrub", "pii_benchmark", "split", "finetune", "evaluate", "gate")
DEFINITIONS = {
    "wall_s": "elapsed time of the stage's work (its MLflow run), seconds",
    "cpu_s": "CPU time of the stage's process and the worker processes it waited for (user + system), seconds",
    "gpu_s": "wall time during which the stage held a CUDA device (torch initialised it), times the devices; null: no GPU used",
    "peak_rss_mb": "largest resident memory of the stage's process or of one of its worker processes, MiB",
    "tokens": "tokens the stage ran through the model: the non-padding tokens of its training steps (finetune), of every forward pass of scoring, loss and generation (evaluate); null: no model",
    "energy_kwh": "energy read from hardware power counters (RAPL for the CPU package, NVML for NVIDIA GPUs) by CodeCarbon while the stage ran; null: not measured (see energy.reason)",
}


def counters() -> dict[str, str]:
    """The hardware power counters this machine exposes to this process, by device."""
    found = {}
    if any(RAPL.glob("intel-rapl:*/energy_uj")) and all(
        os.access(p, os.R_OK) for p in RAPL.glob("intel-rapl:*/energy_uj")
    ):
        found["cpu"] = "RAPL"
    if NVIDIA.is_dir() and any(NVIDIA.iterdir()):
        found["gpu"] = "NVML"
    return found


def no_counters_reason() -> str:
    return (
        f"no hardware power counters: no readable RAPL energy files under {RAPL} (CPU package) and no NVIDIA GPU "
        f"({NVIDIA}); CodeCarbon would fall back to a CPU power table or a default of a few watts per thread, "
        "which is not a measurement (set compute.energy: codecarbon to record that estimate, labelled as one)"
    )


class Meter:
    """Measures one stage: start it, ``count_tokens`` as the work goes, ``finish`` for the ledger."""

    def __init__(self, stage: str, energy: str = "auto", country_iso_code: str = "DEU") -> None:
        self.stage, self.mode, self.country = stage, energy, country_iso_code
        self.tokens: int | None = None
        self._tracker: Any = None
        self._sources: dict[str, str] = {}

    def start(self) -> Meter:
        self._t0 = time.perf_counter()
        self._started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self._cpu0 = _cpu_seconds()
        self._sources = counters() if self.mode != "off" else {}
        if self.mode == "codecarbon" or (self.mode == "auto" and self._sources):
            self._tracker = _start_tracker(self.country)
        return self

    def count_tokens(self, n: int) -> None:
        self.tokens = (self.tokens or 0) + int(n)

    def finish(self) -> dict[str, Any]:
        """The stage's ledger (what ``<compute.dir>/<stage>.json`` holds)."""
        wall = time.perf_counter() - self._t0
        gpus = _gpus_used()
        return {
            "stage": self.stage,
            "started": self._started,
            "wall_s": round(wall, 2),
            "cpu_s": round(_cpu_seconds() - self._cpu0, 2),
            "gpu_s": round(wall * gpus, 2) if gpus else None,
            "peak_rss_mb": _peak_rss_mb(),
            "tokens": self.tokens,
            "energy": self._energy(),
            "machine": {"cpus": os.cpu_count(), "gpus": gpus, "counters": self._sources},
        }

    def _energy(self) -> dict[str, Any]:
        if self.mode == "off":
            return {"measured": False, "kwh": None, "reason": "compute.energy is off"}
        if self._tracker is None:
            return {"measured": False, "kwh": None, "reason": no_counters_reason()}
        try:
            self._tracker.stop()
            data = self._tracker.final_emissions_data
        except Exception as exc:  # noqa: BLE001 - energy fails soft: the stage's work is done
            return {"measured": False, "kwh": None, "reason": f"CodeCarbon failed: {type(exc).__name__}: {exc}"[:300]}
        parts = {"cpu": float(data.cpu_energy), "gpu": float(data.gpu_energy), "ram": float(data.ram_energy)}
        measured = {d: kwh for d, kwh in parts.items() if d in self._sources}
        estimated = {d: kwh for d, kwh in parts.items() if d not in self._sources and kwh > 0}
        out: dict[str, Any] = {
            "measured": bool(measured),
            "kwh": round(sum(measured.values()), 9) if measured else None,
            "by_device": {d: round(k, 9) for d, k in measured.items()},
            "sources": {d: f"{self._sources[d]} via CodeCarbon {_codecarbon_version()}" for d in measured},
        }
        if estimated:
            out["estimated_kwh"] = {d: round(k, 9) for d, k in estimated.items()}
            out["estimate_note"] = (
                "CodeCarbon's estimate without a power counter (CPU load x a table or default wattage; RAM by size): not counted as measured"
            )
        if not measured:
            out["reason"] = no_counters_reason()
        return out


def count_forward_tokens(module: Any, count: Any) -> Any:
    """Calls ``count(n)`` with the tokens of every forward pass of ``module`` (the new positions
    of ``input_ids``, padding excluded where an attention mask says which are padding); returns
    the hook's handle (``.remove()`` it when done)."""

    def hook(_module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            return
        mask = kwargs.get("attention_mask")
        new = ids.shape[-1]
        count(int(mask[..., -new:].sum()) if mask is not None else int(ids.numel()))

    return module.register_forward_pre_hook(hook, with_kwargs=True)


def _start_tracker(country: str) -> Any:
    os.environ.setdefault("CODECARBON_LOG_LEVEL", "error")
    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    from codecarbon import OfflineEmissionsTracker

    tracker = OfflineEmissionsTracker(
        country_iso_code=country, save_to_file=False, log_level="error", tracking_mode="machine",
        measure_power_secs=5, allow_multiple_runs=True,
    )  # fmt: skip
    tracker.start()
    return tracker


def _codecarbon_version() -> str:
    from importlib.metadata import version

    return version("codecarbon")


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _peak_rss_mb() -> float:
    """ru_maxrss is in KiB on Linux."""
    peak = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    )
    return round(peak / 1024, 1)


def _gpus_used() -> int:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return 0
    return torch.cuda.device_count()


# --- the report's sum --------------------------------------------------------------------------


def carbon_intensity(country_iso_code: str, override: float | None) -> dict[str, Any]:
    """kgCO2e per kWh: ``override`` if set, else CodeCarbon's offline energy-mix data for the country.

    Raises:
        GovtuneError: the country is not in CodeCarbon's data (naming the params key).
    """
    if override is not None:
        return {"kg_co2e_per_kwh": override, "source": "params.yaml compute.kg_co2e_per_kwh"}
    from codecarbon.core.emissions import Emissions
    from codecarbon.input import DataSource

    mix = DataSource().get_global_energy_mix_data()
    if country_iso_code not in mix:
        raise GovtuneError("params.yaml: compute.country_iso_code", f"{country_iso_code!r} is not in CodeCarbon's energy-mix data",
                           "use an ISO 3166-1 alpha-3 code (DEU, FRA, USA, ...) or set compute.kg_co2e_per_kwh")  # fmt: skip
    rate = Emissions._global_energy_mix_to_emissions_rate(mix[country_iso_code]).kgs_per_kWh
    name = mix[country_iso_code].get("country_name", country_iso_code)
    return {
        "kg_co2e_per_kwh": round(float(rate), 4),
        "source": f"CodeCarbon {_codecarbon_version()} offline energy mix of {name} ({country_iso_code})",
    }


def summarize(ledgers: dict[str, dict[str, Any] | None], prices: Any, intensity: dict[str, Any]) -> dict[str, Any]:
    """Totals over the stages that made the model, the cost at ``prices`` (``compute.*``) and the emissions.

    A stage without a ledger is listed under ``missing``; energy totals count measured stages only
    and say which were not measured, so a partial figure never passes for the whole.
    """
    present = {s: led for s, led in ledgers.items() if led is not None}
    cpu_s = sum(led["cpu_s"] for led in present.values())
    gpu_s = sum(led["gpu_s"] or 0 for led in present.values())
    measured = {s: led["energy"]["kwh"] for s, led in present.items() if led["energy"]["measured"]}
    not_measured = sorted(s for s, led in present.items() if not led["energy"]["measured"])
    kwh = sum(measured.values()) if measured else None
    energy_complete = bool(measured) and not not_measured
    cost = {
        "cpu_eur": round(cpu_s / 3600 * prices.eur_per_cpu_hour, 4),
        "gpu_eur": round(gpu_s / 3600 * prices.eur_per_gpu_hour, 4),
        "energy_eur": round(kwh * prices.eur_per_kwh, 4) if kwh is not None else None,
    }
    cost["total_eur"] = round(sum(v for v in cost.values() if v is not None), 4)
    return {
        "stages": present,
        "missing": sorted(s for s, led in ledgers.items() if led is None),
        "totals": {
            "wall_s": round(sum(led["wall_s"] for led in present.values()), 1),
            "cpu_s": round(cpu_s, 1),
            "gpu_s": round(gpu_s, 1) if any(led["gpu_s"] for led in present.values()) else None,
            "peak_rss_mb": max((led["peak_rss_mb"] for led in present.values()), default=None),
            "tokens": sum(led["tokens"] or 0 for led in present.values()) or None,
            "energy_kwh": round(kwh, 6) if kwh is not None else None,
            "energy_measured_stages": sorted(measured),
            "energy_not_measured_stages": not_measured,
            "energy_complete": energy_complete,
        },
        "cost": cost
        | {
            "prices": {
                "eur_per_cpu_hour": prices.eur_per_cpu_hour,
                "eur_per_gpu_hour": prices.eur_per_gpu_hour,
                "eur_per_kwh": prices.eur_per_kwh,
            },
            "note": "CPU and GPU time at the hourly prices; energy at the kWh price where measured (on top of hourly prices that may already include it)",
        },  # fmt: skip
        "emissions": {
            "kg_co2e": round(kwh * intensity["kg_co2e_per_kwh"], 6) if kwh is not None else None,
            **intensity,
            "scope": "measured energy only" if kwh is not None else "not measured: no stage measured its energy",
        },
        "definitions": DEFINITIONS,
    }
