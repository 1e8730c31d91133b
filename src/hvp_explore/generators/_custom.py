"""User-supplied generators: a TorchScript file, or a Python factory ``package.module:function``.

Both must map latents (B, n) to images (B, C, H, W) in [-1, 1]. ``latent_dim`` comes from the
module's attribute of that name, else from the ``latent_dim=`` option; ``image_shape`` from the
module's attribute, else from one forward pass of a zero latent. The attributes found this way
are set on the returned module.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from hvp_explore.generators._common import GeneratorError, check_options, first_line, positive_int, probe_image_shape

FACTORY_PATTERN = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
#: What a user's code may raise that must still end as one line: sys.exit() and Ctrl-C inside a factory included.
_ANYTHING = (Exception, SystemExit, KeyboardInterrupt)


def _complete(module: nn.Module, latent_dim: object, *, what: str) -> nn.Module:
    """Check or set ``latent_dim`` and ``image_shape`` on ``module`` (already on its device)."""
    own = getattr(module, "latent_dim", None)
    if own is not None:
        own = positive_int(own, name=f"latent_dim of {what}")
        if latent_dim is not None and positive_int(latent_dim, name="latent_dim") != own:
            raise GeneratorError(f"latent_dim={latent_dim!r} contradicts {what}, whose latent_dim attribute is {own}")
    elif latent_dim is None:
        raise GeneratorError(
            f"{what} has no latent_dim attribute: pass the option latent_dim= (the size n of its latents (B, n))"
        )
    else:
        module.latent_dim = positive_int(latent_dim, name="latent_dim")
    module.eval()
    shape = probe_image_shape(module, module.latent_dim, what=what)
    own_shape = getattr(module, "image_shape", None)
    if own_shape is not None and tuple(int(s) for s in own_shape) != shape:
        raise GeneratorError(f"{what} declares image_shape {tuple(own_shape)} but produces images of shape {shape}")
    module.image_shape = shape
    return module


def load_torchscript(path: Path, *, device: torch.device, **options) -> nn.Module:
    """A generator saved with ``torch.jit.save``.

    Options:
        latent_dim: Latent size, needed when the scripted module has no ``latent_dim`` attribute.
    """
    check_options(f"TorchScript file {path.name}", options, ("latent_dim",))
    if not path.is_file():
        raise GeneratorError(f"TorchScript file {path.name} not found in {path.parent.resolve()}")
    try:
        with warnings.catch_warnings():
            # torch >= 2.10 marks TorchScript deprecated; loading a user's TorchScript file is still the point here.
            warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated", category=FutureWarning)
            module = torch.jit.load(str(path), map_location=device)
    except Exception as exc:  # noqa: BLE001 - any failure means the file is not a TorchScript archive
        raise GeneratorError(
            f"{path} is not a TorchScript archive saved with torch.jit.save ({first_line(exc)}); "
            "for a state dict, load it in a factory package.module:function instead"
        ) from None
    return _complete(module, options.get("latent_dim"), what=f"TorchScript generator {path.name}")


def load_factory(spec: str, *, device: torch.device, **options) -> nn.Module:
    """The module returned by the factory ``package.module:function``.

    The options are passed to the factory as keyword arguments, except ``latent_dim``, which is
    passed only when the factory has a parameter of that name (or ``**kwargs``); without the
    factory's use, ``latent_dim`` supplies the latent size of a module that lacks the attribute.
    """
    module_name, function_name = spec.split(":")
    top = module_name.split(".")[0]
    if top in sys.stdlib_module_names or top == "builtins":
        raise GeneratorError(f"generator factory {spec!r} names the Python standard library: a factory is a function of your own "
                             "package that returns a torch.nn.Module")
    try:
        py_module = importlib.import_module(module_name)
    except _ANYTHING as exc:  # noqa: BLE001 - ImportError, or anything the user's module raises on import
        raise GeneratorError(f"cannot import module {module_name!r} of generator factory {spec!r}: "
                             f"{type(exc).__name__}: {first_line(exc)}") from None
    factory = getattr(py_module, function_name, None)
    if not callable(factory):
        raise GeneratorError(f"module {module_name!r} has no callable {function_name!r} (generator factory {spec!r})")
    if inspect.isbuiltin(factory) or not (inspect.isfunction(factory) or inspect.isclass(factory) or inspect.ismethod(factory)):
        raise GeneratorError(f"generator factory {spec!r} is a {type(factory).__name__}, not a Python function or class that "
                             "returns a torch.nn.Module")
    kwargs = dict(options)
    latent_dim = kwargs.pop("latent_dim", None)
    if latent_dim is not None and _accepts(factory, "latent_dim"):
        kwargs["latent_dim"] = latent_dim
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:
        raise GeneratorError(f"generator factory {spec!r} does not accept the options {sorted(kwargs)}: {exc}") from None
    except ValueError:  # no signature to check (a builtin); let the call report any mismatch
        pass
    try:
        module = factory(**kwargs)
    except _ANYTHING as exc:  # noqa: BLE001 - the user's code; report its failure (sys.exit() included) in one line
        raise GeneratorError(f"generator factory {spec!r} failed: {type(exc).__name__}: {first_line(exc)}") from None
    if not isinstance(module, nn.Module):
        raise GeneratorError(f"generator factory {spec!r} returned {type(module).__name__}, expected a torch.nn.Module")
    return _complete(module.to(device), latent_dim, what=f"the generator from {spec}")


def _accepts(function, name: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except ValueError:
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
