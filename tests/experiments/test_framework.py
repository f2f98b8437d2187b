"""The experiment protocol: kept sub-runs and resume, the report folder, the index, the CLI."""

import json

import pytest
import yaml

from cnnlab import cli
from cnnlab.errors import InvalidSetting
from cnnlab.experiments import UnknownExperiment, get_experiment, run_experiment
from cnnlab.experiments.base import Experiment, Findings, Plot, SubRun, run
from cnnlab.experiments.common import pyplot, save_figure
from cnnlab.experiments.index import collect, render_index, write_index


def toy(calls: list, fail_on: str | None = None) -> Experiment:
    """Three sub-runs that square a number; `fail_on` interrupts that one as Ctrl-C would."""
    def square(key, n):
        def fn(ctx):
            calls.append(key)
            if key == fail_on:
                raise KeyboardInterrupt
            ctx.advance(0.5)
            return {"n": n, "square": n * n * ctx.settings["scale"]}
        return fn

    def plan(settings):
        return [SubRun(f"sq-{n}", square(f"sq-{n}", n)) for n in (1, 2, 3)]

    def analyse(results, settings):
        total = sum(r["square"] for r in results.values())
        return Findings(["n", "square"], [[r["n"], r["square"]] for r in results.values()],
                        "reproduced" if total == 14 * settings["scale"] else "partly",
                        f"the squares sum to {total}", f"sum {total}", setup=["toy"])

    def plot(results, findings, settings, folder):
        plt = pyplot()
        fig, ax = plt.subplots()
        ax.plot([r["n"] for r in results.values()], [r["square"] for r in results.values()])
        return [Plot(save_figure(fig, folder, "squares.png"), "squares")]

    return Experiment("toy", "squares add up", "Pythagoras, Table 1", "1 + 4 + 9 = 14",
                      {"quick": {"scale": 1}, "full": {"scale": 2}}, plan, analyse, plot)


def test_report_folder_holds_every_file(tmp_path):
    lines = []
    report = run(toy([]), "quick", tmp_path / "r", seed=3, progress=lines.append)
    assert report.verdict == "reproduced" and report.reused == []
    folder = tmp_path / "r"
    results = json.loads((folder / "results.json").read_text())
    assert results["schema"] == "cnnlab.experiment/1"
    assert results["verdict_sentence"] == "the squares sum to 14"
    assert results["table"] == {"columns": ["n", "square"], "rows": [[1, 1], [2, 4], [3, 9]]}
    assert results["subruns"]["sq-3"] == {"n": 3, "square": 9}
    assert results["plots"] == [{"file": "squares.png", "caption": "squares"}]
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["seed"] == 3 and config["settings"] == {"scale": 1}
    md = (folder / "report.md").read_text()
    for part in ("**Verdict: reproduced.** the squares sum to 14", "> 1 + 4 + 9 = 14",
                 "Source: Pythagoras, Table 1", "| n | square |", "| 3 | 9 |",
                 "![squares](squares.png)"):
        assert part in md
    assert (folder / "squares.png").stat().st_size > 1000
    assert sorted(p.name for p in (folder / "subruns").iterdir()) == [
        "sq-1.json", "sq-2.json", "sq-3.json"]
    # one progress line for the whole experiment, ending at 100% with the verdict
    assert lines[0].startswith("toy (quick)   0% [0/3 sub-runs] sq-1")
    assert lines[-1].startswith("toy (quick) 100% [3/3 sub-runs] -> reproduced")


def test_an_interrupted_experiment_continues_where_it_stopped(tmp_path):
    calls = []
    with pytest.raises(KeyboardInterrupt):
        run(toy(calls, fail_on="sq-2"), "quick", tmp_path)
    assert calls == ["sq-1", "sq-2"]
    assert [p.name for p in (tmp_path / "subruns").iterdir()] == ["sq-1.json"]
    calls.clear()
    report = run(toy(calls), "quick", tmp_path)
    assert calls == ["sq-2", "sq-3"] and report.reused == ["sq-1"]
    assert report.results["sq-1"] == {"n": 1, "square": 1}
    # another profile, seed or damaged file is not reused
    calls.clear()
    run(toy(calls), "full", tmp_path)
    assert calls == ["sq-1", "sq-2", "sq-3"]
    calls.clear()
    (tmp_path / "subruns" / "sq-3.json").write_text("{not json")
    report = run(toy(calls), "full", tmp_path, seed=0)
    assert calls == ["sq-3"] and report.results["sq-3"]["square"] == 18
    calls.clear()
    run(toy(calls), "full", tmp_path, seed=1)
    assert calls == ["sq-1", "sq-2", "sq-3"]


def test_bad_requests_fail_clearly(tmp_path):
    with pytest.raises(UnknownExperiment, match="did you mean receptive-field"):
        get_experiment("receptive-feild")
    with pytest.raises(InvalidSetting, match="profile must be one of quick, full"):
        run(toy([]), "slow", tmp_path)
    with pytest.raises(InvalidSetting, match="seed"):
        run_experiment("claims", seed=-1, out=tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(Exception, match="file"):
        run(toy([]), "quick", tmp_path / "file")


def test_index_is_generated_from_the_reports(tmp_path):
    run(toy([]), "quick", tmp_path / "toy")
    run(toy([]), "full", tmp_path / "toy-full")
    path = write_index(tmp_path)
    text = path.read_text()
    assert text == render_index(collect(tmp_path))
    assert ("| [toy](toy/report.md) | squares add up | reproduced | sum 14 | quick |" in text)
    assert ("| [toy](toy-full/report.md) | squares add up | reproduced | sum 28 | full |" in text)
    assert text.count("\n| [") == 2
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text('{"schema": "other"}')
    with pytest.raises(Exception, match="not a cnnlab experiment result"):
        collect(tmp_path)


def test_cli_lists_and_rejects(capsys, tmp_path):
    assert cli.main(["experiment", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    names = [r["name"] for r in listed]
    assert names[:3] == ["claims", "receptive-field", "bottleneck"]
    assert all(r["claim"] and r["source"] and r["profiles"] == ["quick", "full"] for r in listed)
    assert cli.main(["experiment", "list"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("claims  ")
    assert cli.main(["experiment", "nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnlab experiment: error: unknown experiment 'nope'")
    assert len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as stop:
        cli.main(["experiment", "claims", "--seed", "x"])
    assert stop.value.code == 2
    assert cli.main(["experiment", "index", "--out", str(tmp_path / "none")]) == 2
    assert "no such folder" in capsys.readouterr().err
