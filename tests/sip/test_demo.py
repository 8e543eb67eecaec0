"""The README's demo as a technician runs it: `registratura demo` places a real call and prints a transcript."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from appliance.boxproc import REPO

pytestmark = pytest.mark.sip


def test_demo_speaks_russian_reaches_the_reception_and_prints_the_call(prompt_cache):
    # The session's prompt cache: the rendering itself is tested elsewhere; here it would only cost time.
    result = subprocess.run([sys.executable, "-m", "appliance", "demo", "--prompt-cache", str(prompt_cache)],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    # The first choice is spoken in Russian and understood by the bundled recogniser, not pressed.
    assert "caller says «анализы» (the box understood: option 5)" in out, out
    assert re.search(r"box plays \[tests_menu\]", out), out
    assert "caller presses 1" in out and re.search(r"box plays \[prep_blood\]", out), out
    assert "the receptionist answers and greets the caller" in out, out
    record = json.loads(out[out.index("{", out.index("Call record")): out.index("\nMetric lines")])
    assert record["outcome"] == "answered" and record["flow"] == "clinic_ru"
    assert "registratura_calls_total{outcome=\"answered\"} 0 -> 1" in out, out
