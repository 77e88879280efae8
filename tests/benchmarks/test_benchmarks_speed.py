"""The speed benchmark (benchmarks/separate.py and its parts) still renders the committed report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]  # tests/benchmarks/ -> the repository
sys.path.insert(0, str(ROOT / "benchmarks"))

import separate  # noqa: E402  (benchmarks/separate.py)


def test_report_renders_from_its_json() -> None:
    """docs/benchmarks.md's generated section is what the driver renders from docs/benchmarks.json,
    so the figures there are traceable to the measured runs (each names its worker and settings)."""
    res = json.loads((ROOT / "docs" / "benchmarks.json").read_text())
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    section = text.split(separate.GENERATED_BEGIN + "\n", 1)[1].split(
        "\n" + separate.GENERATED_END, 1
    )[0]
    assert separate.render_markdown(res) == section
    kinds = {r["kind"] for r in res["all_runs"]}
    assert kinds <= set(separate.WORKERS)


def test_a_worker_prints_only_its_result_line(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """``separate.py --worker KIND SPEC`` (how the driver runs each measurement in a process of its
    own) calls that worker with the spec and prints its figures as a RESULT line."""
    monkeypatch.setitem(separate.WORKERS, "echo", lambda spec: {"seen": spec["x"]})
    assert separate.main(["--worker", "echo", json.dumps({"x": 3})]) == 0
    (line,) = capfd.readouterr().out.splitlines()
    assert line.startswith("RESULT ")
    assert json.loads(line.removeprefix("RESULT ")) == {"seen": 3, "priority_raised": False}


def test_a_generated_section_is_replaced_in_place_or_appended(tmp_path: Path) -> None:
    from bench_common import replace_section

    doc = tmp_path / "doc.md"
    doc.write_text("# Title\n\nintro\n")
    replace_section(doc, "x.py", "first\n")
    replace_section(doc, "y.py", "other\n")
    replace_section(doc, "x.py", "second\n")
    text = doc.read_text()
    assert "first" not in text and text.count("second") == 1 and text.count("other") == 1
    assert text.index("second") < text.index("other")  # replaced where it stood


@pytest.mark.parametrize("name", ["", "fast", "hour"])
def test_whole_process_sections_render_from_their_json(name: str) -> None:
    """Each run of benchmarks/process_speed.py (the README's speed table) is the section that its
    JSON renders to, so the quoted figures are traceable to the runs."""
    import process_speed
    from bench_common import read_section

    res = json.loads(process_speed.json_path(name).read_text())
    block = read_section(process_speed.DOC, f"{process_speed.SECTION} {name}".strip())
    assert process_speed.markdown({"rows": res["rows"]}, res["meta"]) == block


def test_cli_only_times_the_command_line_alone(tmp_path: Path) -> None:
    """--cli-only (the hour-long memory run): aqsep and each export on the command line, no
    in-process, four-stem or import runs; Spleeter only if asked."""
    import process_speed

    for folder in ("e32", "e16"):
        (tmp_path / folder).mkdir()
    argv = [
        "--cli-only",
        "--onnx",
        f"fp32={tmp_path / 'e32'}",
        "--onnx",
        f"fp16={tmp_path / 'e16'}",
    ]
    cases = process_speed.build_cases(process_speed.parse_args(argv), tmp_path / "s.wav", tmp_path)
    assert [c.name for c in cases] == [
        "aqsep",
        "aqsep --backend onnx (fp32)",
        "aqsep --backend onnx (fp16)",
    ]
    assert all("--worker" not in c.argv for c in cases)
    everything = process_speed.build_cases(process_speed.parse_args(argv[1:]), tmp_path, tmp_path)
    assert {"in-process", "aqsep --targets all", "import torch"} <= {c.name for c in everything}
