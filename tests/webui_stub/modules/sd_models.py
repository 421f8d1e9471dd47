"""Stand-in for webui v1.10.1 modules/sd_models.py: checkpoint infos, selecting by the setting, and "loading"
(the tests register a ready model per checkpoint file in ``models``)."""
import enum
import os

from modules import script_callbacks, shared

checkpoints_list = {}      # title -> CheckpointInfo
checkpoint_aliases = {}    # title, name, filename... -> CheckpointInfo
models = {}                # filename -> the model "loaded" for it (set by the tests)
loads = []                 # titles loaded, in order


class ModelType(enum.Enum):
    """(modules/sd_models.py: ModelType)"""
    SD1 = 1
    SD2 = 2
    SDXL = 3
    SSD = 4
    SD3 = 5


class CheckpointInfo:
    """(modules/sd_models.py: CheckpointInfo) for a file; the hash is a fixed string here."""

    def __init__(self, filename):
        self.filename = filename
        self.name = os.path.basename(filename)
        self.name_for_extra = os.path.splitext(self.name)[0]
        self.model_name = os.path.splitext(self.name)[0]
        self.sha256 = None
        self.shorthash = f"{abs(hash(filename)) % 10**10:010d}"
        self.title = f"{self.name} [{self.shorthash}]"
        self.short_title = f"{self.name_for_extra} [{self.shorthash}]"

    def register(self):
        """(modules/sd_models.py: CheckpointInfo.register)"""
        checkpoints_list[self.title] = self
        for alias in (self.title, self.name, self.name_for_extra, self.filename):
            checkpoint_aliases[alias] = self


class SdModelData:
    """(modules/sd_models.py: SdModelData): ``sd_model`` is the loaded model or None (the stand-in keeps it in
    shared.sd_model, a plain attribute, where webui has a property backed by this object)."""

    @property
    def sd_model(self):
        return shared.sd_model


model_data = SdModelData()


def select_checkpoint():
    """The CheckpointInfo the setting sd_model_checkpoint names (modules/sd_models.py: select_checkpoint)."""
    info = checkpoint_aliases.get(shared.opts.sd_model_checkpoint)
    return info if info is not None else next(iter(checkpoints_list.values()), None)


def load_model(checkpoint_info=None, already_loaded_state_dict=None):
    """Make the model registered for the checkpoint webui's loaded model: the attributes webui sets
    (modules/sd_models.py: load_model and load_model_weights), then the model_loaded callbacks."""
    checkpoint_info = checkpoint_info or select_checkpoint()
    model = models[checkpoint_info.filename]
    model.sd_checkpoint_info = checkpoint_info
    model.sd_model_checkpoint = checkpoint_info.filename
    model.sd_model_hash = checkpoint_info.shorthash
    state_dict = model.state_dict()
    set_model_type(model, state_dict)
    if model.is_sdxl:
        from modules import sd_models_xl

        sd_models_xl.extend_sdxl(model)
        model.cond_stage_model = model.conditioner   # sd_hijack.py: model_hijack.hijack, two text encoders
    unet_input = model.model.state_dict().get("diffusion_model.input_blocks.0.0.weight")
    model.is_sdxl_inpaint = model.is_sdxl and unet_input is not None and unet_input.shape[1] == 9
    model.lowvram = bool(getattr(shared.cmd_opts, "medvram", False) or getattr(shared.cmd_opts, "lowvram", False))
    model.alphas_cumprod_original = model.alphas_cumprod
    shared.sd_model = model
    shared.opts.data["sd_model_checkpoint"] = checkpoint_info.title
    loads.append(checkpoint_info.title)
    script_callbacks.model_loaded_callback(model)
    return model


def set_model_type(model, state_dict):
    """The family flags (modules/sd_models.py: set_model_type), from the model's parts and weights."""
    model.is_sd1 = model.is_sd2 = model.is_sdxl = model.is_ssd = model.is_sd3 = False
    if "model.diffusion_model.x_embedder.proj.weight" in state_dict:
        model.is_sd3, model.model_type = True, ModelType.SD3
    elif hasattr(model, "conditioner"):
        model.is_sdxl = True
        if "model.diffusion_model.middle_block.1.transformer_blocks.0.attn1.to_q.weight" not in state_dict:
            model.is_ssd, model.model_type = True, ModelType.SSD
        else:
            model.model_type = ModelType.SDXL
    elif hasattr(model.cond_stage_model, "model"):
        model.is_sd2, model.model_type = True, ModelType.SD2
    else:
        model.is_sd1, model.model_type = True, ModelType.SD1


def reload_model_weights(sd_model=None, info=None, forced_reload=False):
    """Load the checkpoint the setting names when it is not the loaded one (modules/sd_models.py)."""
    checkpoint_info = info or select_checkpoint()
    sd_model = sd_model or shared.sd_model
    if sd_model is not None and sd_model.sd_checkpoint_info.filename == checkpoint_info.filename:
        return sd_model
    return load_model(checkpoint_info)
