"""Reverse-mode autodiff: recording mode, the engine, function transforms, custom rules."""

from .custom import custom_vjp
from .engine import backward, gradients
from .functional import grad, tree_flatten, tree_unflatten, value_and_grad, vjp
from .mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled

__all__ = ["backward", "custom_vjp", "enable_grad", "grad", "gradients", "is_grad_enabled",
           "no_grad", "set_grad_enabled", "tree_flatten", "tree_unflatten", "value_and_grad",
           "vjp"]
