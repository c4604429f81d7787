"""The example scripts run and say what their comments claim."""

import os
import pathlib
import subprocess
import sys

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
    assert "shift(0,1): first breaks at 2 MaxPool" in done.stdout and "r1:" not in done.stdout
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
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert "UCI handwritten digits" in text or "UCI ML hand-written digits" in text
    assert "MNIST" not in text.split("**Seeds**")[0]  # the offline data is never called MNIST
    assert "| CNN, circular padding, max pool | 1,418 |" in text and "| MLP 784-24-10 | 19,090 |" in text
    for heading in ("Claims 1 and 2", "Claim 3", "Claim 4"):
        assert heading in text
    rows = [line for line in text.splitlines() if line.startswith("| CNN, circular padding, max pool | init |")]
    assert len(rows) == 2  # claim 3 and claim 4
    assert rows[0].split(" | ")[2].startswith("3 equivariant")  # circular CNN: exactly invariant to shifts by 4
