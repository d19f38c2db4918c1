"""What a fitted model needs besides its weights, carried in the weights' own ``state_dict``."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .exceptions import IncompatibleModelError
from .settings import GraphSettings

#: Name of the contract's submodule in a fitted estimator's ``module_``.
CONTRACT_NAME = "fitted_contract"
_FORMAT = 1


@dataclass(frozen=True, eq=False)
class Contract:
    """The input settings and target encoding a network was trained with.

    Parameters
    ----------
    estimator : str
        Class name of the estimator that trained the network.
    graph_settings : GraphSettings
        How the training graphs were built.
    n_out : int
        Network outputs: targets for regression, classes for classification.
    target_mean, target_scale : ndarray of shape (n_out,) or None
        Standardisation of regression targets (``y = output * scale + mean``).
    target_ndim : int or None
        1 when regression targets were 1-D, 2 when 2-D.
    classes : ndarray or None
        Sorted class labels, the order of the network's outputs.
    module : str or None
        Qualified class name of the network (``skgnn.module.CGCNN``), so that
        weights are never loaded into another architecture; ``None`` in
        contracts saved before it was recorded (all of them CGCNNs).
    """

    estimator: str
    graph_settings: GraphSettings
    n_out: int
    target_mean: np.ndarray | None = None
    target_scale: np.ndarray | None = None
    target_ndim: int | None = None
    classes: np.ndarray | None = None
    module: str | None = None

    def module_sizes(self) -> dict[str, int | float]:
        """What a module needs to take this contract's inputs and give its outputs.

        ``cutoff`` (the graphs' neighbour cutoff, where a radial basis ends)
        goes only to networks that take it.
        """
        return {
            "orig_atom_fea_len": self.graph_settings.atom_features.shape[1],
            "nbr_fea_len": len(self.graph_settings.gaussian_centers),
            "n_out": self.n_out,
            "cutoff": self.graph_settings.cutoff,
        }

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """The contract as tensors only, so any weights format (torch, safetensors) holds it."""
        settings = self.graph_settings
        meta = {
            "format": _FORMAT,
            "estimator": self.estimator,
            "gaussian_width": settings.gaussian_width,
            "cutoff": settings.cutoff,
            "max_neighbors": settings.max_neighbors,
            "n_out": self.n_out,
            "target_ndim": self.target_ndim,
            "classes": None if self.classes is None else self.classes.tolist(),
            "module": self.module,
        }
        try:
            text = json.dumps(meta)
        except TypeError as exc:
            raise TypeError(
                f"Class labels of type {type(self.classes[0]).__name__} cannot be saved with "
                "the weights (labels must be strings, numbers or booleans); pickle the "
                "estimator instead."
            ) from exc
        tensors = {
            "meta": torch.frombuffer(bytearray(text.encode()), dtype=torch.uint8),
            "atom_features": torch.from_numpy(settings.atom_features.copy()),
            "gaussian_centers": torch.from_numpy(settings.gaussian_centers.copy()),
        }
        if self.target_mean is not None:
            tensors["target_mean"] = torch.from_numpy(self.target_mean.copy())
            tensors["target_scale"] = torch.from_numpy(self.target_scale.copy())
        return tensors

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> Contract:
        meta = json.loads(bytes(tensors["meta"].cpu().numpy()).decode())
        if meta.get("format") != _FORMAT:
            raise IncompatibleModelError(
                f"The weights hold a contract of format {meta.get('format')}; this skgnn "
                f"reads format {_FORMAT}."
            )
        settings = GraphSettings(
            atom_features=tensors["atom_features"].cpu().numpy(),
            gaussian_centers=tensors["gaussian_centers"].cpu().numpy(),
            gaussian_width=meta["gaussian_width"],
            cutoff=meta["cutoff"],
            max_neighbors=meta["max_neighbors"],
        )
        scaled = "target_mean" in tensors
        return cls(
            estimator=meta["estimator"],
            graph_settings=settings,
            n_out=meta["n_out"],
            target_mean=tensors["target_mean"].cpu().numpy() if scaled else None,
            target_scale=tensors["target_scale"].cpu().numpy() if scaled else None,
            target_ndim=meta["target_ndim"],
            classes=None if meta["classes"] is None else np.asarray(meta["classes"]),
            module=meta.get("module"),
        )


class ContractModule(nn.Module):
    """Holds a :class:`Contract` inside a network, so that its ``state_dict`` carries it.

    As PyG keeps a module's constants in registered buffers, the contract is
    written into ``state_dict()`` beside the weights (as tensors) and read
    back by ``load_state_dict``: skorch's ``save_params``/``load_params``,
    its checkpoints and pickle carry it with no special case. A state without
    one is reported as a missing key, so weights of an unfitted network or of
    another program are refused.
    """

    def __init__(self, contract: Contract | None = None) -> None:
        super().__init__()
        self.contract = contract

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        if self.contract is not None:
            for name, tensor in self.contract.to_tensors().items():
                destination[prefix + name] = tensor

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        tensors = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if "meta" not in tensors:
            missing_keys.append(prefix + "meta")
            return
        try:
            self.contract = Contract.from_tensors(tensors)
        except (KeyError, ValueError, IncompatibleModelError) as exc:
            error_msgs.append(f"the saved contract cannot be read: {exc}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({'fitted' if self.contract else 'empty'})"
