"""Names that become file names follow one rule wherever they come from (TrainConfig.name, the trainer's
fallback to a name read from a file, the --name option): a path separator or a leading dot is an error that
says so, other characters than letters, digits and '._- ' are dropped as webui does, and no file is ever
written outside out_dir."""
import pytest

from hypernet_ext import create, formats
from hypernet_ext.errors import ConfigError
from hypernet_ext.fileio import NAME_CHARS, clean_name
from hypernet_ext.standalone.cli import main
from hypernet_ext.training import TrainConfig, Trainer


def small_net(name):
    return create(name=name, sizes=(32, 64, 768), layer_structure=(1, 0.25, 1), activation="relu", seed=0)


def webui_clean(name):   # webui v1.10.1 modules/hypernetworks/ui.py create_hypernetwork, re-created here
    return "".join(x for x in name if (x.isalnum() or x in "._- "))


@pytest.mark.parametrize("name, problem", [
    ("../escaped", "path separator"), ("a/b", "path separator"), ("a\\b", "path separator"),
    (".hidden", "starts with a dot"), ("..", "starts with a dot"), ("?/", "path separator"),
    ("?!", "no letters or digits"), ("?.x", "starts with a dot"),   # the cleaned name is checked too
])
def test_a_name_that_would_leave_the_folder_is_an_error_not_cleaned(name, problem):
    with pytest.raises(ConfigError) as info:
        TrainConfig(name=name)
    assert str(info.value).startswith("name: ") and problem in str(info.value)


@pytest.mark.parametrize("name", ["my style: v2?", "név_1", "a..b", "style (v1.5) *final*", " padded "])
def test_other_characters_are_dropped_as_in_webui(name):
    assert TrainConfig(name=name).name == webui_clean(name).strip() == clean_name(name)
    assert NAME_CHARS == "._- "


def test_a_network_whose_file_names_it_outside_out_dir_writes_nothing(ldm_host, shapes_dataset, tmp_path):
    pytest.importorskip("ldm")
    source = formats.save(small_net("../escaped"), tmp_path / "source.pt")
    loaded = formats.load(source)
    assert loaded.name == "../escaped"   # the name as the file carries it
    config = TrainConfig(name="", out_dir=str(tmp_path / "out"), steps=1, save_every=0, tensorboard=False)
    with pytest.raises(ConfigError, match="the network's name .* contains a path separator"):
        Trainer(ldm_host, loaded, shapes_dataset, config).train()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source.pt"]


def test_a_network_name_from_a_file_is_cleaned_like_any_other(ldm_host, shapes_dataset, tmp_path):
    pytest.importorskip("ldm")
    config = TrainConfig(name="", out_dir=str(tmp_path), steps=1, save_every=0, tensorboard=False,
                         save_safetensors=False)
    result = Trainer(ldm_host, small_net("style: v2"), shapes_dataset, config).train()
    assert result.final_path == str(tmp_path / "style v2.pt")
    assert formats.load(result.final_path).name == "style v2"


def test_the_name_option_follows_the_rule_before_anything_is_built(tmp_path, capsys):
    code = main(["train", "--name", "../escaped", "--data", str(tmp_path), "--out", str(tmp_path / "out"),
                 "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "name: '../escaped' contains a path separator" in err
    assert list(tmp_path.iterdir()) == []
