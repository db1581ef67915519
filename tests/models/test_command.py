"""`lakd models`: table / JSON output and bad input (exit 2)."""
import json

from lakd.cli import main


def test_table(capsys):
    rc = main(["models", "--model", "deeplabv3", "--model", "pspnet", "--backbone", "resnet18",
               "--num-classes", "21", "--in-channels", "4", "--input-size", "64", "96"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "21 classes, 4 input channels" in out and "64x96" in out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("deeplabv3", "pspnet"))}
    assert lines["deeplabv3"][1] == "resnet18" and lines["deeplabv3"][2] == "13.609"
    assert lines["pspnet"][2] == "12.920"
    assert lines["pspnet"][4] == "8x12" and float(lines["pspnet"][3]) > 0


def test_json_all_small(capsys):
    rc = main(["models", "--json", "--width", "0.125", "--input-size", "32", "32", "--no-flops"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    from lakd.models import list_combinations

    assert rc == 0 and [(r["name"], r["backbone"]) for r in rows] == list_combinations()
    assert all(r["flops"] is None and r["params"] > 0 and r["output_size"] == [4, 4] for r in rows)


def test_flops_json(capsys):
    assert main(["models", "--json", "--model", "stdc", "--input-size", "64", "48", "--width", "0.125"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["backbone"] for r in rows] == ["stdc1", "stdc2"] and all(r["flops"] > 0 for r in rows)
    assert rows[0]["output_size"] == [8, 6]


def test_bad_input(capsys):
    assert main(["models", "--model", "unet"]) == 2
    assert "unknown model 'unet'; valid models: fcn, pspnet" in capsys.readouterr().err
    assert main(["models", "--num-classes", "1"]) == 2
    assert "--num-classes must be >= 2" in capsys.readouterr().err
    assert main(["models", "--input-size", "0", "5"]) == 2
    assert main(["models", "--model", "stdc", "--backbone", "resnet18"]) == 2
    assert "no registered model matches" in capsys.readouterr().err
