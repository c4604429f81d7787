"""The example scripts run and say what their comments claim."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_check_a_layer_example():
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "check_a_layer.py")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("translations(16x16): 255 elements, 63 equivariant, 192 broken")
    assert "C4: 3 elements, 3 broken" in done.stdout
    assert lines[-1].startswith("p4(16x16): 1023 elements, 1023 equivariant (ok")


def _run(*argv, cwd=None):
    env = {**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "--xla_backend_optimization_level=0")}
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=600, cwd=cwd, env=env)


def test_custom_layer_example_checks_in_three_lines_and_reports(tmp_path):
    out = tmp_path / "report.html"
    done = _run(str(ROOT / "examples" / "custom_layer.py"), "-o", str(out))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "p4(16x16): 1023 elements, 1023 equivariant (ok; float32)"
    assert "`2 MaxPool` breaks shift(0,1)" in done.stdout and "breaks r1" not in done.stdout
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_property_test_example_passes_under_pytest(tmp_path):
    done = _run(
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        str(ROOT / "examples" / "property_test_example.py"),
        "--equivax-summary",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert "4 passed" in done.stdout and "equivax summary" in done.stdout


@pytest.mark.slow
def test_claims_example_measures_every_claim_quickly(tmp_path):
    out = tmp_path / "results.md"
    done = _run(
        str(ROOT / "examples" / "claims.py"),
        "--epochs",
        "1",
        "--limit",
        "128",
        "--models",
        "cnn-circular,mlp",
        "--every",
        "1",
        "--repeats",
        "2",
        "--probe",
        "2",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert "UCI handwritten digits" in text or "UCI ML hand-written digits" in text
    assert "MNIST" not in text.split("**Seeds**")[0]  # the offline data is never called MNIST
    assert "| CNN, circular padding, max pool | 1,418 |" in text and "| MLP 784-24-10 | 19,090 |" in text
    for heading in ("Claims 1 and 2", "Claim 3", "Claim 4", "Claim 5", "Claim 6", "Equivariance during training"):
        assert heading in text
    rows = [line for line in text.splitlines() if line.startswith("| CNN, circular padding, max pool | init |")]
    assert len(rows) == 2  # claim 3 and claim 4
    assert rows[0].split(" | ")[2].startswith("3 equivariant")  # circular CNN: exactly invariant to shifts by 4
    compute = {row.split(" | ")[0]: row.split(" | ") for row in text.split("Claim 5")[1].split("###")[0].splitlines()}
    cnn, mlp = compute["| CNN, circular padding, max pool"], compute["| MLP 784-24-10"]
    flops = {name: float(row[2].replace(",", "")) for name, row in (("cnn", cnn), ("mlp", mlp))}
    assert flops["cnn"] > 5 * flops["mlp"] > 0  # fewer parameters, more arithmetic
    variations = text.split("Claim 6")[1].split("###")[0]
    assert "| MLP 784-24-10 | " in variations and "cannot take 56×56" in variations.split("| MLP 784-24-10 | ")[1]
    monitored = [
        row
        for row in text.split("### Equivariance during training")[1].splitlines()
        if row.startswith("| CNN, circular")
    ]
    assert monitored and monitored[0].split(" | ")[1].startswith("3 (every 1 steps)")
    assert monitored[0].split(" | ")[-2] == "0"  # no compilation after the first check
