import json

from neural3d.cli import command_modules, main


def test_info_json_reports_versions_and_optionals(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["torch"] and "cpu" in info["devices"]
    # every optional package is either active or says why not
    for entry in info["optional"].values():
        assert entry["active"] or entry["why"]


def test_every_command_module_registers():
    assert "neural3d.commands.info" in command_modules()
