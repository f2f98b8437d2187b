"""The experiment protocol, the kept sub-runs and the report folder.

An experiment is one module under `cnnlab.experiments` that defines one `Experiment`:

    EXPERIMENT = Experiment(
        name="receptive-field", claim="one line", source="Luo et al. 2016, Fig. 1",
        literature="the claim as the paper states it (a quotation or close paraphrase)",
        profiles={"test": {...}, "quick": {...}, "full": {...}},   # plain settings
        subruns=plan,       # settings -> [SubRun(key, fn)]; fn(ctx) -> JSON-able dict
        analyse=analyse,    # (results by key, settings) -> Findings (table, verdict, numbers)
        plot=plot)          # (results, findings, settings, folder) -> [Plot]

Sub-runs are the expensive part (trainings, timings). Each finished one is written at once to
OUT/subruns/<key>.json with the settings it ran under, so a re-run of an interrupted experiment
skips every sub-run already done with the same settings and continues with the next.

The report folder:

    OUT/report.md  results.json  config.yaml  *.png  subruns/*.json

results.json (schema "cnnlab.experiment/1") is documented in the README.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from cnnlab.errors import InvalidSetting, UsageError
from cnnlab.outputs import check_output_dir
from cnnlab.train.checkpoint import atomic_write_text

SCHEMA = "cnnlab.experiment/1"
VERDICTS = ("reproduced", "partly", "not reproduced")


class UnknownExperiment(UsageError):
    """No experiment of that name: `name`, `known` (every registered name)."""

    def __init__(self, name: str, known: list[str], close: list[str]):
        self.name, self.known = name, known
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        super().__init__(f"unknown experiment {name!r}{hint} (known: {', '.join(known)})")


@dataclass(frozen=True)
class SubRun:
    """One kept unit of work. `key` names its file (letters, digits, - _ .); `fn(ctx)` returns
    a JSON-able dict; `weight` is its share of the progress line (about its running time)."""

    key: str
    fn: Callable[[RunContext], dict]
    weight: float = 1.0


@dataclass(frozen=True)
class Plot:
    file: str  # a PNG in the report folder
    caption: str


@dataclass
class Findings:
    """What analyse() concludes. `table` rows are lists of cells (strings or numbers)."""

    columns: list[str]
    rows: list[list]
    verdict: str  # one of VERDICTS
    sentence: str  # the verdict in one sentence, with the numbers that decide it
    key_number: str  # the single number the index shows, with its unit
    setup: list[str] = field(default_factory=list)  # lines of the report's setup section
    notes: list[str] = field(default_factory=list)  # caveats a reader needs
    numbers: dict = field(default_factory=dict)  # deciding numbers, machine-readable

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


@dataclass(frozen=True)
class Experiment:
    name: str
    claim: str  # one line for `cnnlab experiment list` and the index
    source: str  # paper, figure or table
    literature: str  # the claim as the literature states it
    profiles: dict[str, dict]
    subruns: Callable[[dict], list[SubRun]]
    analyse: Callable[[dict, dict], Findings]
    plot: Callable[[dict, Findings, dict, Path], list[Plot]]


@dataclass
class Report:
    """What run_experiment returns: the folder, the verdict and everything in results.json."""

    name: str
    profile: str
    folder: Path
    findings: Findings
    plots: list[Plot]
    results: dict  # sub-run results by key
    reused: list[str]  # sub-runs found finished in the folder (not run again)
    seconds: float  # this invocation
    subrun_seconds: dict[str, float | None]  # each sub-run's own time, when it ran

    @property
    def verdict(self) -> str:
        return self.findings.verdict

    @property
    def report_md(self) -> Path:
        return self.folder / "report.md"


class RunContext:
    """What a sub-run gets: its settings, the seed, the device, and a way to move the
    experiment's progress line (`advance(fraction)` of this sub-run done)."""

    def __init__(self, settings: dict, seed: int, device: str, advance: Callable[[float], None]):
        self.settings, self.seed, self.device, self.advance = settings, seed, device, advance


def default_out(name: str, profile: str) -> Path:
    """runs/experiments/NAME-PROFILE: the report folder when none is given."""
    return Path("runs") / "experiments" / f"{name}-{profile}"


def default_device() -> str:
    """The full profile runs on a GPU when there is one; quick and test runs also use it."""
    return "cuda" if torch.cuda.is_available() else "cpu"


# ---- running ------------------------------------------------------------------------------------

_KEY = re.compile(r"^[A-Za-z0-9_.-]+$")


def run(exp: Experiment, profile: str = "quick", out: str | Path | None = None, seed: int = 0,
        progress: Callable[[str], None] | None = None, device: str | None = None) -> Report:
    """Run (or continue) one experiment; see the module docstring."""
    if profile not in exp.profiles:
        shown = [p for p in exp.profiles if p != "test"]  # test: for the test suite only
        raise InvalidSetting("profile", profile, "one of " + ", ".join(shown))
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise InvalidSetting("seed", seed, "an integer in [0, 2**63)")
    folder = Path(out) if out is not None else default_out(exp.name, profile)
    check_output_dir(folder)
    settings = dict(exp.profiles[profile])
    device = device or default_device()
    started = time.perf_counter()
    plan = exp.subruns(settings)
    keys = [s.key for s in plan]
    bad = [k for k in keys if not _KEY.match(k)]
    if bad or len(set(keys)) != len(keys):
        raise ValueError(f"{exp.name}: sub-run keys must be unique file names, got {keys}")
    store = SubRunStore(folder / "subruns")
    line = ProgressLine(exp.name, profile, plan, progress)
    results, reused, seconds = {}, [], {}
    for sub in plan:
        identity = {"experiment": exp.name, "profile": profile, "seed": seed,
                    "settings": settings, "key": sub.key}
        kept = store.load(sub.key, identity)
        if kept is not None:
            results[sub.key], seconds[sub.key] = kept["result"], kept.get("seconds")
            reused.append(sub.key)
            line.finished(sub, reused=True)
            continue
        line.start(sub)
        ctx = RunContext(settings, seed, device, line.within)
        t0 = time.perf_counter()
        result = sub.fn(ctx)
        seconds[sub.key] = round(time.perf_counter() - t0, 3)
        store.save(sub.key, identity, result, seconds[sub.key], device)
        results[sub.key] = result
        line.finished(sub, reused=False)
    findings = exp.analyse(results, settings)
    plots = exp.plot(results, findings, settings, folder)
    report = Report(exp.name, profile, folder, findings, plots, results, reused,
                    time.perf_counter() - started, seconds)
    write_report(exp, report, settings, seed, device)
    line.done(findings)
    return report


class SubRunStore:
    """OUT/subruns/<key>.json: {"identity": ..., "seconds", "device", "result"}; a file whose
    identity differs (another profile, seed or setting) or that does not parse is run again."""

    def __init__(self, folder: Path):
        self.folder = folder

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def load(self, key: str, identity: dict) -> dict | None:
        """The saved body ({"identity", "seconds", "device", "result"}) or None."""
        path = self.path(key)
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(saved, dict) or saved.get("identity") != _jsonable(identity):
            return None
        return saved if isinstance(saved.get("result"), dict) else None

    def save(self, key: str, identity: dict, result: dict, seconds: float, device: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        body = {"identity": identity, "seconds": seconds, "device": device,
                "result": result}
        atomic_write_text(self.path(key), json.dumps(_jsonable(body)) + "\n")


def _jsonable(value):
    """JSON's view of a value (tuples become lists, NaN stays a float), for comparisons."""
    return json.loads(json.dumps(value))


class ProgressLine:
    """One line for the whole experiment: `name quick 43% [3/7 sub-runs] key 2m10s`, weighted by
    each sub-run's expected share of the time. `emit` gets the text (the CLI redraws it)."""

    def __init__(self, name: str, profile: str, plan: list[SubRun], emit):
        self.name, self.profile, self.emit = name, profile, emit
        self.total = sum(s.weight for s in plan) or 1.0
        self.count, self.done_weight, self.done_count = len(plan), 0.0, 0
        self.current: SubRun | None = None
        self.started = time.perf_counter()
        self._last = 0.0

    def _show(self, fraction: float, label: str, force: bool = False) -> None:
        now = time.perf_counter()
        if self.emit is None or (not force and now - self._last < 0.5):
            return
        self._last = now
        elapsed = int(now - self.started)
        self.emit(f"{self.name} ({self.profile}) {100 * fraction:3.0f}% "
                  f"[{self.done_count}/{self.count} sub-runs] {label} "
                  f"{elapsed // 60}m{elapsed % 60:02d}s")

    def start(self, sub: SubRun) -> None:
        self.current = sub
        self._show(self.done_weight / self.total, sub.key, force=True)

    def within(self, fraction: float) -> None:
        if self.current is not None:
            part = self.current.weight * min(max(fraction, 0.0), 1.0)
            self._show((self.done_weight + part) / self.total, self.current.key)

    def finished(self, sub: SubRun, reused: bool) -> None:
        self.done_weight += sub.weight
        self.done_count += 1
        self._show(self.done_weight / self.total, sub.key + (" (kept)" if reused else ""),
                   force=True)

    def done(self, findings: Findings) -> None:
        self._show(1.0, f"-> {findings.verdict}", force=True)


# ---- the report folder --------------------------------------------------------------------------

def write_report(exp: Experiment, report: Report, settings: dict, seed: int, device: str) -> None:
    folder, f = report.folder, report.findings
    config = {"experiment": exp.name, "profile": report.profile, "seed": seed, "device": device,
              "torch": str(torch.__version__), "settings": settings}
    atomic_write_text(folder / "config.yaml", yaml.safe_dump(_jsonable(config), sort_keys=False))
    results = {
        "schema": SCHEMA, "experiment": exp.name, "profile": report.profile, "seed": seed,
        "device": device, "torch": str(torch.__version__), "claim": exp.claim,
        "source": exp.source, "verdict": f.verdict, "verdict_sentence": f.sentence,
        "key_number": f.key_number, "numbers": f.numbers,
        "table": {"columns": f.columns, "rows": f.rows},
        "plots": [{"file": p.file, "caption": p.caption} for p in report.plots],
        "settings": settings, "seconds": round(report.seconds, 3),
        "subrun_seconds": report.subrun_seconds,
        "subruns": report.results,
    }
    atomic_write_text(folder / "results.json", json.dumps(_jsonable(results), indent=1) + "\n")
    atomic_write_text(folder / "report.md", render_markdown(exp, report, settings, seed, device))


def render_markdown(exp: Experiment, report: Report, settings: dict, seed: int,
                    device: str) -> str:
    f = report.findings
    lines = [f"# {exp.name}: {exp.claim}", "",
             f"**Verdict: {f.verdict}.** {f.sentence}", "",
             "## The claim", "", f"> {exp.literature}", "", f"Source: {exp.source}", "",
             "## Setup", ""]
    lines += [f"- {s}" for s in f.setup]
    lines += [f"- profile `{report.profile}`, seed {seed}, device {device}, torch "
              f"{torch.__version__}; settings in `config.yaml`",
              f"- the sub-runs took {_total_seconds(report) / 60:.1f} min of wall time in all "
              "(on a machine shared with other jobs when run here)",
              f"- rerun: `cnnlab experiment {exp.name} --profile {report.profile} "
              f"--seed {seed}`", "", "## Measured", "", markdown_table(f.columns, f.rows), ""]
    if f.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in f.notes] + [""]
    if report.plots:
        lines += ["## Plots", ""]
        for p in report.plots:
            lines += [f"![{p.caption}]({p.file})", "", f"*{p.caption}*", ""]
    return "\n".join(lines).rstrip() + "\n"


def _total_seconds(report: Report) -> float:
    return sum(v or 0.0 for v in report.subrun_seconds.values())


def markdown_table(columns: list[str], rows: list[list]) -> str:
    def cell(v) -> str:
        if isinstance(v, bool):
            return "yes" if v else "**no**"
        if isinstance(v, float):
            return "-" if math.isnan(v) else f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
        if isinstance(v, int):
            return f"{v:,}"
        return "-" if v is None else str(v).replace("|", "\\|")

    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(out)
