"""pixelwise: image segmentation (semantic, instance, panoptic) on PyTorch.

    import pixelwise as pw
    model = pw.create_model("unet", num_classes=11)
    pw.save_model(model, "my_model", classes=[...])
    model = pw.load_model("my_model")                             # nn.Module; model.pixelwise_config
    model = pw.from_pretrained("user/name")                       # a Hub repo id, or a local directory
    pred = pw.Predictor.from_dir("my_model").predict(image)      # uint8 (H,W,3) -> Prediction
    scores = pw.evaluate("my_model", "camvid:/data/camvid")       # miou, pixel_acc, per_class_iou, ...

Names are imported on first use, so `import pixelwise` (and the CLI's start) stays fast.
"""
from importlib import import_module

__version__ = "0.1.0"

_API = {
    "create_model": "pixelwise.models",
    "list_models": "pixelwise.models",
    "save_model": "pixelwise.modeldir",
    "load_model": "pixelwise.modeldir",
    "read_model_config": "pixelwise.modeldir",
    "save_pretrained": "pixelwise.hub",
    "from_pretrained": "pixelwise.hub",
    "push_to_hub": "pixelwise.hub",
    "model_card": "pixelwise.modelcard",
    "Predictor": "pixelwise.inference.predictor",
    "Prediction": "pixelwise.tasks",
    "TASKS": "pixelwise.tasks",
    "evaluate": "pixelwise.engine.evaluate",
    "open_dataset": "pixelwise.data.formats",
    "train": "pixelwise.engine.trainer",
    "load_config": "pixelwise.config",
}


_MODULES = ("classical", "models", "metrics", "losses", "tasks", "viz")  # submodules reachable as pw.NAME
__all__ = [*_API, *_MODULES, "__version__"]


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    if name in _MODULES:
        return import_module(f"pixelwise.{name}")
    raise AttributeError(f"module 'pixelwise' has no attribute '{name}'")


def __dir__():
    return sorted(__all__)
