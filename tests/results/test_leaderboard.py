"""`evalbench leaderboard` on records written here: byte-identical regeneration, --check catching a
changed record (unified diff, exit 1, nothing written), --suite, the page's content (sections,
protocol versions, baselines, best values, provenance) and no network references."""
from __future__ import annotations

import random
import re
import shlex
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from evalbench.cli import main
from evalbench.results import leaderboard
from evalbench.results.frame import leaderboard_csv, records_to_frame
from evalbench.results.record import Record
from evalbench.results.store import RecordStore
from evalbench.specs.protocol import resolve_protocol

SHA = {"a": "a1" * 32, "b": "b2" * 32, "sup": "5c" * 32}
FINETUNE = ("semisup_1pct", "semisup_10pct", "finetune_100pct")


def ref(name: str) -> str:
    """name@version of a built-in protocol, as the records here carry it."""
    return f"{name}@{resolve_protocol(name).version}"


def _protocol(name: str) -> dict:
    p = resolve_protocol(name)
    return {"name": p.name, "version": p.version, "implementation": p.implementation, "params": p.params,
            "stochastic": p.stochastic, "view": p.view}


def _checkpoint(name: str) -> dict:
    c = {"name": name, "arch": "builtin:small-cnn", "random_init": name == "base", "init_seed": 0 if name == "base" else None,
         "sha256": SHA.get(name), "weights": {"random_init_seed": 0} if name == "base" else {"sha256": SHA[name]},
         "data": {"in_chans": 1, "input_size": 16, "mean": [0.5], "std": [0.5], "interpolation": "bilinear"},
         "path": None, "skip_missing": [], "meta": {}}
    if name != "base":
        method = "supervised" if name == "sup" else "simclr"
        c["meta"] = {"pretrain": {"method": method, "seed": 0, "task": "digits",
                                  "knobs": {"batch_size": 64, **({"loss.temperature": 0.1 if name == "a" else 0.5}
                                                                 if method == "simclr" else {})}}}
    return c


def record(ckpt: str, protocol: str, metrics: dict, *, task: str = "digits", seed=None, details=None,
           created: str = "2026-12-01T10:00:00+00:00") -> Record:
    key = f"{ckpt}-{task}-{protocol}-{seed}".replace("_", "")
    ci = {m: [max(0.0, v - 0.02), min(1.0, v + 0.02)] for m, v in metrics.items() if m.startswith("top1")}
    return Record.from_dict({
        "schema": 2, "key": key, "checkpoint": _checkpoint(ckpt), "task": {"name": task, "version": 1},
        "protocol": _protocol(protocol), "seed": seed, "status": "ok", "metrics": metrics,
        "details": {"ci95": ci, "predictions": {"n": 359}, **(details or {})}, "error": None,
        "env": {"evalbench": "0.1.0", "git": "c0ffee123456", "torch": "2.14.1", "device": "cpu"},
        "timing_s": {"probe": 0.1}, "created": created})


def fixture_records() -> list[Record]:
    """4 checkpoints (random init, supervised reference, two SimCLR temperatures) on digits with k-NN,
    linear and the three fine-tuning fractions (2 seeds), plus k-NN on mnist5k for two of them."""
    recs = []
    acc = {"base": 0.80, "sup": 0.97, "a": 0.93, "b": 0.90}
    for name, v in acc.items():
        recs.append(record(name, "knn", {"top1_k20_T0.07": v, "top1_k200_T0.1": v - 0.05}))
        recs.append(record(name, "linear", {"top1": v + 0.01}, details={"l2": 1e-4 if name == "a" else 1e-3}))
        for frac_i, proto in enumerate(FINETUNE):
            for seed in (0, 1):
                recs.append(record(name, proto, {"top1": v * (0.5 + 0.2 * frac_i) + 0.01 * seed}, seed=seed,
                                   details={"lr": 0.1}))
    recs += [record(n, "knn", {"top1_k20_T0.07": acc[n] - 0.1, "top1_k200_T0.1": acc[n] - 0.2}, task="mnist5k")
             for n in ("a", "base")]
    return recs


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return leaderboard.build(fixture_records(), plots=True)


def test_leaderboard__the_same_records_give_byte_identical_files(files):
    shuffled = fixture_records()
    random.Random(3).shuffle(shuffled)
    again = leaderboard.build(shuffled, plots=True)
    assert list(again) == list(files) and all(again[k] == files[k] for k in files)
    assert {"leaderboard.md", "leaderboard.csv", "index.html", "plots/label-fraction.png",
            "plots/label-fraction.svg"} <= set(files)
    assert b"Software" not in files["plots/label-fraction.png"] and b"<dc:date>" not in files["plots/label-fraction.svg"]


def test_leaderboard__two_processes_with_other_hash_seeds_write_the_same_bytes(tmp_path):
    """Nothing depends on set or dict order across interpreters (PYTHONHASHSEED), plots included."""
    import os
    import subprocess
    import sys

    results = _write_store(tmp_path / "res", fixture_records())
    outs = []
    for seed in ("1", "2"):
        out = tmp_path / f"lb{seed}"
        subprocess.run([sys.executable, "-m", "evalbench.cli", "leaderboard", "--results", str(results), "--out", str(out)],
                       check=True, env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True)
        outs.append({p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()})
    assert len(outs[0]) == 7 and outs[0] == outs[1]


def test_leaderboard__csv_is_the_frames_leaderboard_csv(files):
    assert files["leaderboard.csv"].decode() == leaderboard_csv(records_to_frame(fixture_records()))


def _html(files) -> str:
    return files["index.html"].decode()


def test_leaderboard__page_has_a_section_per_task_with_protocol_versions(files):
    page = _html(files)
    assert re.findall(r'<section id="task-([^"]+)">', page) == ["digits", "mnist5k"]
    digits = page[page.index('id="task-digits"'):page.index('id="task-mnist5k"')]
    for p in ("knn", "linear") + FINETUNE:
        assert f'{p} <span class="ver">v{resolve_protocol(p).version}' in digits
    assert digits.count('<tbody class="entry') == 4


def test_leaderboard__baselines_are_marked_and_listed_first(files):
    page = _html(files)
    digits = page[page.index('id="task-digits"'):page.index('id="task-mnist5k"')]
    names = re.findall(r'<td class="name" data-v="([^"]+)">', digits)
    assert names == ["base", "sup", "a", "b"]
    assert 'class="entry baseline-random-init"' in digits and 'class="entry baseline-supervised-reference"' in digits
    assert "baseline: random init" in digits and "baseline: supervised reference" in digits
    md = files["leaderboard.md"].decode()
    assert "Baselines: `base` (random init), `sup` (supervised reference)." in md


def _cells(page: str, task: str, checkpoint: str) -> list[str]:
    section = page[page.index(f'id="task-{task}"'):]
    row = section[section.index(f'data-v="{checkpoint}"'):]
    return re.findall(r"<td[^>]*data-v=\"[^\"]*\"[^>]*>", row[:row.index('<tr class="prov"')])  # value cells


def test_leaderboard__the_best_value_of_each_column_is_bold(files):
    page = _html(files)
    sup, a = _cells(page, "digits", "sup"), _cells(page, "digits", "a")
    assert sup and all('class="best"' in c for c in sup)  # the supervised reference is best in every column
    assert not any('class="best"' in c for c in a)
    mnist_a, mnist_base = _cells(page, "mnist5k", "a"), _cells(page, "mnist5k", "base")
    assert all("best" in c for c in mnist_a) and not any("best" in c for c in mnist_base)


def test_leaderboard__every_number_carries_its_provenance(files):
    page = _html(files)
    titles = [t for t in re.findall(r'title="([^"]*)"', page) if "records:" in t]
    linear_a = next(t for t in titles if t.startswith(f"{ref('linear')} top1 on digits@1: 94.0 %") and SHA["a"] in t)
    assert "L2=0.0001" in linear_a and "seed: none (deterministic" in linear_a
    assert "evalbench 0.1.0 (git c0ffee123456)" in linear_a and "test examples: 359" in linear_a
    assert "created: 2026-12-01T10:00:00+00:00" in linear_a and "&quot;l2_grid&quot;" in linear_a
    tuned = next(t for t in titles if t.startswith(f"{ref('semisup_1pct')} top1 on digits@1") and SHA["b"] in t)
    assert "seeds: 0, 1" in tuned and "mean ± std over 2 seeds" in tuned and "lr=0.1" in tuned
    assert "random init (seed 0)" in page  # the baseline's weights
    assert page.count('<tr class="prov" hidden>') == 6  # a details row per (task, checkpoint)


def test_leaderboard__the_page_fetches_nothing(files):
    page = _html(files)
    assert not re.search(r'(src|href|action)="(https?:)?//', page) and "@import" not in page
    assert "<link" not in page and not re.search(r"<script[^>]+src=", page)
    assert re.findall(r'<img src="([^"]+)"', page) == ["plots/label-fraction.svg",
                                                      "plots/ablation-simclr-pretraining-digits.svg"]


def _write_store(root: Path, records: list[Record]) -> Path:
    store = RecordStore(root)
    for r in records:
        store.write(r)
    return root


def test_leaderboard__check_passes_on_what_it_wrote_and_catches_a_changed_record(tmp_path, capsys):
    results, out = _write_store(tmp_path / "res", fixture_records()), tmp_path / "lb"
    assert main(["leaderboard", "--results", str(results), "--out", str(out)]) == 0
    assert main(["leaderboard", "--results", str(results), "--out", str(out), "--check"]) == 0
    written = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    changed = next(r for r in fixture_records() if r.checkpoint["name"] == "a" and r.protocol["name"] == "linear")
    RecordStore(results).write(replace(changed, metrics={"top1": 0.5}))
    capsys.readouterr()
    assert main(["leaderboard", "--results", str(results), "--out", str(out), "--check"]) == 1
    diff = capsys.readouterr().out
    assert f"--- {out / 'leaderboard.csv'}" in diff and "+++ leaderboard.csv (from the records)" in diff
    lines = diff.splitlines()
    assert any(x.startswith(f"-a,digits,{ref('linear')},") and ",top1,0.940000," in x for x in lines)
    assert any(x.startswith(f"+a,digits,{ref('linear')},") and ",top1,0.500000," in x for x in lines)
    assert "+++ index.html (from the records)" in diff and "+++ leaderboard.md (from the records)" in diff
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == written  # --check writes nothing


def test_leaderboard__stale_plots_are_removed_and_reported(tmp_path, capsys):
    results, out = _write_store(tmp_path / "res", fixture_records()), tmp_path / "lb"
    assert main(["leaderboard", "--results", str(results), "--out", str(out)]) == 0
    assert (out / "plots" / "label-fraction.png").is_file()
    capsys.readouterr()
    assert main(["leaderboard", "--results", str(results), "--out", str(out), "--no-plots", "--check"]) == 1
    assert "only in" in capsys.readouterr().out
    assert main(["leaderboard", "--results", str(results), "--out", str(out), "--no-plots"]) == 0
    assert not list((out / "plots").iterdir()) and "<img" not in (out / "index.html").read_text()


def test_leaderboard__suite_restricts_to_its_checkpoints_tasks_protocols_and_seeds(tmp_path):
    prep = {"in_chans": 1, "mean": [0.5], "std": [0.5], "input_size": 16}
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({
        "checkpoints": [{"name": "base", "arch": "builtin:small-cnn", "init": "random", "preprocessing": prep},
                        {"name": "a", "arch": "builtin:small-cnn", "init": "random", "init_seed": 1,
                         "preprocessing": prep}],
        "tasks": ["digits"], "protocols": ["knn", "semisup_1pct"], "seeds": [1]}))
    results, out = _write_store(tmp_path / "res", fixture_records()), tmp_path / "lb"
    assert main(["leaderboard", "--results", str(results), "--suite", str(suite), "--out", str(out), "--no-plots"]) == 0
    rows = (out / "leaderboard.csv").read_text().splitlines()[1:]
    kept = {tuple(r.split(",")[:3]) for r in rows}
    assert kept == {(c, "digits", ref(p)) for c in ("a", "base") for p in ("knn", "semisup_1pct")}
    assert all(r.endswith(",1") for r in rows)  # semisup_1pct: only seed 1 (n = 1 record per cell)
    linear = dict(resolve_protocol("knn").params, chunk_size=7)  # other params: not the suite's protocol
    other = replace(fixture_records()[0], key="other-params", protocol={**_protocol("knn"), "params": linear})
    from evalbench.specs.suite import load_suite
    assert other not in leaderboard.suite_records([other], load_suite(suite))


def test_leaderboard__markdown_has_a_section_per_task_and_links_the_plots(files):
    md = files["leaderboard.md"].decode()
    assert md.index("## digits (v1)") < md.index("## mnist5k (v1)") < md.index("## Plots")
    assert "![Accuracy vs label fraction](plots/label-fraction.png)" in md
    assert ref("linear") in md and ref("semisup_10pct") in md


# --- examples/ci: the workflow cannot drift from the CLI --------------------------------------------------

CI = Path(__file__).resolve().parents[2] / "examples" / "ci"


def _workflow_commands() -> list[str]:
    """Every `evalbench ...` command line of the workflow's run steps (continuations joined, comments dropped)."""
    doc = yaml.safe_load((CI / "leaderboard.yml").read_text())
    lines = []
    for job in doc["jobs"].values():
        for step in job.get("steps", []):
            text = step.get("run", "").replace("\\\n", " ")
            lines += [ln.split(" #")[0].strip() for ln in text.splitlines()]
    return [ln for ln in lines if ln.startswith("evalbench ")]


def test_ci_example__workflow_parses_and_publishes_after_the_gates():
    doc = yaml.safe_load((CI / "leaderboard.yml").read_text())
    triggers = doc.get("on", doc.get(True))  # YAML 1.1 reads the key `on` as true
    assert {"push", "pull_request"} <= set(triggers)
    steps = doc["jobs"]["evaluate"]["steps"]
    uses = [s.get("uses", "").split("@")[0] for s in steps]
    assert "actions/upload-pages-artifact" in uses
    publish = doc["jobs"]["publish"]
    assert publish["needs"] == "evaluate" and publish["steps"][0]["uses"].startswith("actions/deploy-pages@")
    names = [s.get("name", "") for s in steps]
    assert names.index("Regenerate the leaderboard") < names.index("Gate: reference targets") < names.index(
        "Upload the page")


def test_ci_example__every_evalbench_command_parses_with_the_cli_parser():
    from evalbench.cli import build_parser

    commands = _workflow_commands()
    assert [c.split()[1] for c in commands] == ["pretrain", "pretrain", "run", "leaderboard", "diff", "check-targets"]
    parser = build_parser()
    for line in commands:
        try:
            a = parser.parse_args(shlex.split(line)[1:])
        except SystemExit:
            pytest.fail(f"examples/ci/leaderboard.yml: `{line}` does not parse with evalbench's CLI")
        for attr in ("config", "suite", "targets"):  # the files a command names exist in the repository
            path = getattr(a, attr, None)
            assert path is None or (CI.parents[1] / path).is_file(), f"{line}: {path} does not exist"


def test_ci_example__suite_targets_and_committed_leaderboard_fit_together():
    from evalbench.results.gates import check_targets, load_cells, load_targets
    from evalbench.specs.suite import load_suite

    suite = load_suite(CI / "checkpoints.yaml")
    cells = load_cells(CI / "leaderboard.csv")
    assert {c.name for c in suite.checkpoints} == set(cells["checkpoint"])  # the reference covers the list
    assert check_targets(load_targets(CI / "targets.yaml"), cells).passed
    # the reference is of today's protocols (a new version or other params would fail the workflow's diff gate)
    from evalbench.results.frame import params_id
    assert set(zip(cells["protocol"], cells["params_id"])) == {
        (f"{p.name}@{p.version}", params_id(p.params)) for p in suite.protocols}, (
        "examples/ci/leaderboard.csv is stale: regenerate it with the workflow's pretrain, run and leaderboard "
        "commands (examples/ci/README.md) and commit site/leaderboard.csv as examples/ci/leaderboard.csv")


def test_leaderboard__page_and_markdown_mark_the_same_cells():
    """The marks come from one place (statistics.rank_cells): a cell tied with the best (overlapping
    intervals, no predictions) is marked tied on the page and † in the Markdown, and a column with one
    checkpoint has no best in either."""
    recs = [record("a", "knn", {"top1_k20_T0.07": 0.93, "top1_k200_T0.1": 0.88}),
            record("b", "knn", {"top1_k20_T0.07": 0.925, "top1_k200_T0.1": 0.875}),
            record("a", "linear", {"top1": 0.95})]  # linear: a column of one checkpoint
    files = leaderboard.build(recs, plots=False)
    page, md = files["index.html"].decode(), files["leaderboard.md"].decode()
    a, b = _cells(page, "digits", "a"), _cells(page, "digits", "b")
    assert [('class="best"' in c) for c in a] == [True, True, False]  # knn k20, knn k200, linear (alone)
    assert ['class="tied"' in c for c in b] == [True, True, False] and not any('class="best"' in c for c in b)
    assert 'class="na"' in b[2]  # b has no linear record
    row = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| a ") or line.startswith("| b ")}
    assert row["a"].count("**") == 4 and "95.0" in row["a"] and "**95.0" not in row["a"]  # two bold knn cells
    assert row["b"].count("†") == 2
