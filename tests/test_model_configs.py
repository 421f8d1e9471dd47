"""The published architectures hypernet_ext knows (standalone/model_configs.py), built on the meta device (no
memory): their UNets have the published parameter counts and exactly the attention widths families.py gives each
family, and a checkpoint's keys and shapes lead to its config as in webui; SD2's eps and v checkpoints are told
apart by running the UNet, with webui's rule."""
import pytest
import torch

from hypernet_ext.errors import ConfigError
from hypernet_ext.families import check_fit, default_widths, family_of
from hypernet_ext.webui.generation import model_widths

pytest.importorskip("ldm")
from sd_configs import meta_unet  # noqa: E402

from hypernet_ext.standalone.model_configs import CONFIGS, FAMILY, guess_config, predicts_velocity  # noqa: E402

# UNet parameters of the published models (SD 1.x 860M, SD 2.x 866M, SDXL base 2.6B)
PUBLISHED = {"v1-inference": 859_520_964, "v2-inference": 865_910_724, "v2-inference-v": 865_910_724,
             "sd_xl_base": 2_567_463_684}
TEXT_KEYS = {   # one key of each family's text encoder, with its shape (webui looks at these)
    "sd1": {"cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (49408, 768)},
    "sd2": {"cond_stage_model.model.ln_final.weight": (1024,),
            "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight": (3072, 1024)},
    "sdxl": {"conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight": (49408, 768),
             "conditioner.embedders.1.model.ln_final.weight": (1280,)},
    "sdxl-refiner": {"conditioner.embedders.0.model.ln_final.weight": (1280,)},
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_published_unets_have_their_parameters_and_their_familys_widths(name):
    unet = meta_unet(name)
    if name in PUBLISHED:
        assert sum(p.numel() for p in unet.parameters()) == PUBLISHED[name]
    assert model_widths(unet) == default_widths(FAMILY[name])
    assert family_of(model_widths(unet)) == FAMILY[name]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_config_is_inferred_from_the_weights(name):
    shapes = {f"model.diffusion_model.{key}": tuple(value.shape) for key, value in meta_unet(name).state_dict().items()}
    shapes.update(TEXT_KEYS[FAMILY[name]])
    expected = "v2-inference" if name == "v2-inference-v" else name   # told apart once the weights are loaded
    assert guess_config(shapes)[0] == expected


@pytest.mark.parametrize("shapes, message", [
    ({"model.diffusion_model.input_blocks.0.0.weight": (320, 9, 3, 3),
      "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (49408, 768)},
     "takes 9 input channels .* give --config"),
    ({"model.diffusion_model.x_embedder.proj.weight": (1536, 16, 2, 2)}, "not one of the architectures"),
    ({"something.else": (3,)}, "give its yaml with --config"),
])
def test_what_cannot_be_inferred_asks_for_the_config(shapes, message):
    with pytest.raises(ConfigError, match=message):
        guess_config(shapes)


@pytest.mark.parametrize("bias, velocity", [(0.5, False), (-2.0, True)])
def test_sd2_v_prediction_is_recognised_by_running_the_unet(bias, velocity):
    """An eps UNet's output at the last timestep is close to its input (pure noise), a v UNet's far below it:
    the output layer's bias makes a tiny UNet one or the other."""
    from hypernet_ext.standalone.tiny import tiny_unet

    unet = tiny_unet("sd2-tiny", seed=0)
    with torch.no_grad():
        unet.out[-1].bias.fill_(bias)
    assert predicts_velocity(unet) is velocity


@pytest.mark.parametrize("network, model, family, fits, warns", [
    ([320, 640, 768, 1280], [320, 640, 768, 1280], "sd1", [320, 640, 768, 1280], None),
    ([320, 640, 768, 1280], [640, 1280, 2048], "sdxl", [640, 1280],
     "made for SD1\\); this model \\(SDXL\\) has attention widths 640, 1280, 2048, so it applies at 640, 1280 only "
     "\\(320, 768 not in this model\\)"),
    ([640, 1280, 2048], [320, 640, 1024, 1280], None, [640, 1280], "made for SDXL\\); this model \\(SD2\\)"),
])
def test_a_network_that_fits_in_part_gets_a_warning(network, model, family, fits, warns):
    applies, warning = check_fit("hn", network, model, family)
    assert applies == fits
    assert (warning is None) == (warns is None)
    if warns:
        import re

        assert re.search(warns, warning), warning


def test_a_network_with_none_of_the_models_widths_names_the_family_it_was_made_for():
    with pytest.raises(ValueError, match=r"covers widths 1024 \(made for SD2\) and this model \(SDXL\) has attention "
                                         r"widths 640, 1280, 2048: none"):
        check_fit("hn", [1024], [640, 1280, 2048])
