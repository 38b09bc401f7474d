"""``inverseg train --list``: one described line per preset."""

from __future__ import annotations

from inverseg.cli.main import main
from inverseg.config import preset_names, preset_summary
from inverseg.methods import METHODS


def test_list_describes_every_preset(capsys):
    assert main(["train", "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(preset_names())
    by_name = {line.split()[0]: line for line in lines}
    assert "crn  " in by_name["crn-camvid-cpu"] and " camvid " in by_name["crn-camvid-cpu"]
    assert "96×128" in by_name["crn-camvid-cpu"] and "1024×2048" in by_name["crn-1024p"]
    for name in preset_names():
        summary = preset_summary(name)
        assert summary["method"] in METHODS, name
        assert len(summary["description"]) > 10 and "\n" not in summary["description"], name
        assert by_name[name].endswith(summary["description"])
