"""``python -m hypernet_ext inspect`` and ``convert``, driven through hypernet_ext.standalone.cli.main."""
import hashlib
import json

import torch

from hypernet_ext import create, formats
from hypernet_ext.config import NetworkConfig
from hypernet_ext.standalone.cli import main


def network(**fields):
    fields.setdefault("sizes", (16, 24))
    net = create(NetworkConfig(seed=3, **fields), name="cli-net")
    net.step, net.sd_checkpoint, net.sd_checkpoint_name = 420, "feedbeef", "sd15-pruned"
    return net


def outputs(net, width=16):
    x = torch.randn(1, 3, width, generator=torch.Generator().manual_seed(0))
    return net(x, 0.5)


def test_inspect_prints_what_the_file_holds(tmp_path, capsys):
    path = formats.save(network(activation="relu", add_layer_norm=True, use_dropout=True,
                                dropout_structure=(0, 0.1, 0)), tmp_path / "n.pt")
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    for expected in ("cli-net", "webui-pt", "16, 24", "1, 2, 1", "relu", "layer norm", "dropout 0, 0.1, 0",
                     "420", "sd15-pruned [feedbeef]", digest[:10], digest, f"{path.stat().st_size:,} bytes"):
        assert expected in out, (expected, out)


def test_inspect_json_is_one_object(tmp_path, capsys):
    path = formats.save(network(skip_connection=True, upsample="Linear"), tmp_path / "n.safetensors")
    assert main(["inspect", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["format"] == "safetensors" and data["widths"] == [16, 24] and data["step"] == 420
    assert data["config"]["skip_connection"] is True and data["config"]["upsample"] == "Linear"
    assert data["hash"] == hashlib.sha256(path.read_bytes()).hexdigest() and data["short_hash"] == data["hash"][:10]
    assert data["size"] == path.stat().st_size and data["name"] == "cli-net" and data["webui_loadable"] is False


def test_inspect_of_a_foreign_file_is_an_error_naming_it(tmp_path, capsys):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(2), path)
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "not a hypernetwork" in err


def test_convert_both_ways_keeps_outputs(tmp_path, capsys):
    net = network(activation="gelu")
    src = formats.save(net, tmp_path / "a.pt")
    assert main(["convert", str(src), str(tmp_path / "b.safetensors")]) == 0
    assert "safetensors" in capsys.readouterr().out
    assert main(["convert", str(tmp_path / "b.safetensors"), str(tmp_path / "c.pt")]) == 0
    for name in ("b.safetensors", "c.pt"):
        back = formats.load(tmp_path / name)
        assert all(torch.equal(a, b) for a, b in zip(outputs(back), outputs(net)))
    assert formats.describe(tmp_path / "c.pt").format == formats.WEBUI_PT


def test_convert_refuses_to_overwrite_without_force(tmp_path, capsys):
    src = formats.save(network(), tmp_path / "a.pt")
    out = tmp_path / "b.safetensors"
    out.write_bytes(b"precious")
    assert main(["convert", str(src), str(out)]) == 2
    assert "--force" in capsys.readouterr().err and out.read_bytes() == b"precious"
    assert main(["convert", str(src), str(out), "--force"]) == 0
    assert formats.describe(out).format == formats.SAFETENSORS


def test_convert_refuses_unknown_suffix(tmp_path, capsys):
    src = formats.save(network(), tmp_path / "a.pt")
    assert main(["convert", str(src), str(tmp_path / "a.ckpt")]) == 2
    assert ".safetensors" in capsys.readouterr().err and not (tmp_path / "a.ckpt").exists()


def test_convert_to_pt_explains_when_webui_cannot_load_the_result(tmp_path, caplog):
    src = formats.save(network(skip_connection=True), tmp_path / "skip.safetensors")
    with caplog.at_level("WARNING"):
        assert main(["convert", str(src), str(tmp_path / "skip.pt")]) == 0
    assert "skip connections" in caplog.text and "vanilla webui cannot load it" in caplog.text
    assert formats.describe(tmp_path / "skip.pt").format == formats.PEER_PT


def test_inspect_and_a_weight_error_describe_the_structure_in_the_same_words(tmp_path, capsys):
    path = formats.save(network(activation="relu", add_layer_norm=True, use_dropout=True,
                                dropout_structure=(0, 0.1, 0)), tmp_path / "n.pt")
    tree = torch.load(path, weights_only=True)
    tree["layer_structure"] = [1, 3, 1]   # settings edited without the weights
    torch.save(tree, path)
    assert main(["inspect", str(path)]) == 0
    structure = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("structure:"))
    described = structure.split(":", 1)[1].strip()
    assert described.startswith("1, 3, 1; activation relu")
    assert main(["convert", str(path), str(tmp_path / "n.safetensors")]) == 2
    assert f"({described})" in capsys.readouterr().err
