"""The allocator setting of gnnsparse.memory (glibc mallopt)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gnnsparse import memory


def test_retain_freed_memory_round_trip_and_measurement():
    before = memory.retaining()
    try:
        if not memory.retain_freed_memory(True):
            pytest.skip("not glibc")
        assert memory.retaining()
        cost = memory.allocation_cost(nbytes=8 << 20, repeats=3)
        assert cost["nbytes"] == 8 << 20 and cost["retaining"] is True
        assert cost["fresh_s"] > 0 and cost["reused_s"] > 0
        assert memory.retain_freed_memory(False)
        assert not memory.retaining()
    finally:
        memory.retain_freed_memory(before)


@pytest.mark.parametrize("bad", [0, -5, 2 ** 31, 1.5, True, "1"])
def test_retain_freed_memory_rejects_bad_threshold(bad):
    with pytest.raises(ValueError, match="trim_threshold"):
        memory.retain_freed_memory(True, trim_threshold=bad)


def test_env_var_switches_it_on_at_import():
    code = "import gnnsparse, gnnsparse.memory as m; print(m.retaining())"
    env = {"GNNSPARSE_RETAIN_MEMORY": "1", "PATH": "/usr/bin:/bin"}
    import os

    env.update({k: v for k, v in os.environ.items() if k.startswith(("PYTHON", "HOME", "LD_"))})
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("True", "False")  # False only where glibc is missing
    if memory._libc() is not None:
        assert out.stdout.strip() == "True"


@pytest.mark.parametrize("value,expected", [("yes", True), ("ON", True), ("0", False), ("off", False), ("", None)])
def test_env_setting_values(monkeypatch, value, expected):
    monkeypatch.setenv("GNNSPARSE_RETAIN_MEMORY", value)
    assert memory.env_setting(default=None) is expected


def test_env_setting_bad_value_is_a_clean_cli_error(monkeypatch, capsys):
    from gnnsparse.cli import main

    monkeypatch.setenv("GNNSPARSE_RETAIN_MEMORY", "Maybe")
    assert main(["datasets"]) == 2
    assert "GNNSPARSE_RETAIN_MEMORY='Maybe'" in capsys.readouterr().err
