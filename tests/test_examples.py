"""The example scripts run and say what their comments claim."""

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
