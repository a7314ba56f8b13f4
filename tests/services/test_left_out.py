"""``ballast run`` loads Ballast without rich and uvicorn (`services.cli.left_out`): the
block makes a name unimportable only while it lasts, and a replica that logs to a
terminal still prints an error's traceback."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from services.cli.left_out import leaving_out

ROOT = Path(__file__).resolve().parents[2]


def test_a_name_fails_to_import_inside_the_block_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ballast_left_out_probe.py").write_text("VALUE = 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "ballast_left_out_probe", raising=False)
    with pytest.raises(RuntimeError), leaving_out(("ballast_left_out_probe", "json")):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module("ballast_left_out_probe")
        assert importlib.import_module("json").dumps([1]) == "[1]", "imported before: kept"
        raise RuntimeError("leaving the block by an error unblocks too")
    assert importlib.import_module("ballast_left_out_probe").VALUE == 7
    monkeypatch.delitem(sys.modules, "ballast_left_out_probe")


def test_a_replica_loads_no_rich_and_its_console_log_shows_the_traceback() -> None:
    probe = (
        "import json, sys\n"
        "from services.cli.main import run_command\n"
        "run_command()\n"
        "import structlog\n"
        "from services.logging import configure_logging\n"
        "configure_logging('console', 'info')\n"
        "try:\n"
        "    1 / 0\n"
        "except ZeroDivisionError:\n"
        "    structlog.get_logger().exception('handler failed')\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60,
        check=True,
    )  # fmt: skip
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "services.cli.run" in loaded
    assert not {m for m in loaded if m.split(".")[0] in {"rich", "pygments"}}
    assert "handler failed" in done.stderr
    assert "Traceback (most recent call last)" in done.stderr
    assert "ZeroDivisionError: division by zero" in done.stderr
