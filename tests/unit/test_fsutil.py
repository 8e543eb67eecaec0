"""fsutil.replace_file: the one way the box rewrites a file in place (settings, boot entries)."""

import os

import pytest

from appliance.fsutil import replace_file


def test_replace_file_swaps_content_and_leaves_nothing_beside(tmp_path):
    target = tmp_path / "entries" / "registratura-1.0+3.conf"
    replace_file(target, "title old\n")
    replace_file(target, "title new\n")
    assert target.read_text() == "title new\n"
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


def test_a_failing_prepare_keeps_the_old_file_and_removes_the_half_written_one(tmp_path):
    target = tmp_path / "registratura.yaml"
    target.write_text("sip:\n  max_calls: 8\n")

    def refuse(tmp):
        raise PermissionError(f"chown {tmp}: operation not permitted")

    with pytest.raises(PermissionError):
        replace_file(target, b"sip: {}\n", prepare=refuse)
    assert target.read_text() == "sip:\n  max_calls: 8\n"
    assert [p.name for p in tmp_path.iterdir()] == ["registratura.yaml"]


def test_prepare_sees_the_new_content_before_the_rename(tmp_path):
    target = tmp_path / "secret.txt"
    seen = []

    def tighten(tmp):
        seen.append(tmp.read_text())
        os.chmod(tmp, 0o600)

    replace_file(target, "token\n", prepare=tighten)
    assert seen == ["token\n"]
    assert target.stat().st_mode & 0o777 == 0o600
