"""A scikit-learn-style estimator: ``TSimCNE().fit_transform(images)`` gives a 2-D map."""

from __future__ import annotations

import inspect
import os
import time
import warnings
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from .augment import Augmenter
from .augment_check import warn_if_destructive
from .augment_policy import augmentation_for
from .checkpoint import load_checkpoint, save_checkpoint
from tsimcne_widgets.data.load import ImageSet, load_images
from .device import choose_memory_layout, resolve_device
from .inference import embed
from .models import TSimCNENet, build_backbone
from .planner import plan_for_budget
from .schedule import DEFAULT_EPOCHS, StagePlan, epoch_tuple
from .tensors import images_to_tensor
from .trainer import Trainer

__all__ = ["TSimCNE", "NotFittedError"]


class TSimCNE(BaseEstimator):
    """t-SimCNE: a ResNet trained so that its 2-D output is a t-SNE-like map of images.

    Parameters
    ----------
    total_epochs : int or sequence of int
        Epochs of stage 1 (128-D output), 2 (new 2-D layer, rest frozen) and 3 (all
        weights, lr / 1000).  Fewer entries run only the first stages; then the output
        (``embedding_``, ``transform``) has the width of the last stage that ran,
        i.e. ``projection_dim`` for a single stage.
    batch_size : int
        Images per step (two views each).  Larger than the data: the whole data set
        becomes one batch, with a warning.
    backbone : str or torch.nn.Module
        ``"resnet18"``, ``"resnet10"``, optionally with a width suffix (``"resnet18-w16"``),
        or a module returning ``(N, feature_dim)``.
    backbone_width : int, optional
        Channels of the first ResNet stage (default 64).
    projection_dim, hidden_dim, out_dim : int
        Stage-1 output width, the head's hidden width, the map's dimension.
    learning_rate : float, optional
        Stage-1 (and 2) learning rate; default ``0.03 * batch_size / 256``.
    device : str
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
    random_state : int, optional
        Seed; the same seed on the CPU gives the same map.
    time_budget : float, optional
        Seconds for the whole fit: backbone, width, epochs (in the ratio of
        ``total_epochs``) and resolution are then chosen by measuring this device
        (see :func:`~tsimcne_widgets.engine.planner.plan_for_budget`).  A module or an explicit
        width/suffix fixes the network; only the epochs are then chosen.
    image_size : int, optional
        Resize the images to this size when loading them.
    checkpoint_path : str, optional
        Write a resumable checkpoint there during training (see :meth:`resume`).
    compile : bool
        Train through ``torch.compile``.
    verbose : bool
        Show a progress bar.
    num_threads : int, optional
        CPU threads (see :class:`~tsimcne_widgets.engine.trainer.Trainer`).
    augmentation : dict, optional
        Keyword arguments of :class:`~tsimcne_widgets.engine.augment.Augmenter` that replace
        the paper's augmentations, e.g. ``{"crop_scale": (0.5, 1.0)}`` for images
        whose object is small: crops of a fifth of the image often miss it, and the
        network then matches views by their background instead.  Default: the
        images' own ``ImageSet.augmentation`` (the bundled digits and shapes have
        one), else the paper's.
    augmentation_check : bool
        Before training, check without labels that two augmented views of an image
        still look alike (:func:`~tsimcne_widgets.engine.augment_check.check_augmentation`,
        about 0.2 s, counted in ``time_budget``) and warn when the augmentations
        destroy the images; the result is ``augmentation_check_``.  False: no check.

    Attributes
    ----------
    embedding_ : numpy.ndarray
        ``(N, out_dim)`` map of the training images.
    labels_ : numpy.ndarray or None
        Labels of the training images where the data had them.
    trainer_ : Trainer
        The trainer of the last fit or :meth:`prepare` (pause, unpause or stop it from
        another thread).
    augmentation_check_ : AugmentationCheck or None
        The check of the augmentations before the last fit (None: off, or fewer than
        :data:`~tsimcne_widgets.engine.augment_check.MIN_IMAGES` images).

    Examples
    --------
    >>> from tsimcne_widgets.data.datasets import load_digits
    >>> estimator = TSimCNE(time_budget=180, random_state=0)
    >>> xy = estimator.fit_transform(load_digits())  # doctest: +SKIP
    """

    def __init__(
        self,
        total_epochs=DEFAULT_EPOCHS,
        batch_size: int = 512,
        backbone="resnet18",
        backbone_width: int | None = None,
        projection_dim: int = 128,
        hidden_dim: int = 1024,
        out_dim: int = 2,
        learning_rate: float | None = None,
        device: str = "auto",
        random_state: int | None = None,
        time_budget: float | None = None,
        image_size: int | None = None,
        checkpoint_path: str | os.PathLike | None = None,
        compile: bool = False,
        verbose: bool = False,
        num_threads: int | None = None,
        augmentation: dict | None = None,
        augmentation_check: bool = True,
    ):
        self.total_epochs = total_epochs
        self.batch_size = batch_size
        self.backbone = backbone
        self.backbone_width = backbone_width
        self.projection_dim = projection_dim
        self.hidden_dim = hidden_dim
        self.out_dim = out_dim
        self.learning_rate = learning_rate
        self.device = device
        self.random_state = random_state
        self.time_budget = time_budget
        self.image_size = image_size
        self.checkpoint_path = checkpoint_path
        self.compile = compile
        self.verbose = verbose
        self.num_threads = num_threads
        self.augmentation = augmentation
        self.augmentation_check = augmentation_check

    # ------------------------------------------------------------------ input checks
    def _load(self, X, y=None) -> ImageSet:
        if isinstance(X, np.ndarray) and X.dtype.kind == "f" and not np.isfinite(X).all():
            raise ValueError(
                "the image array contains NaN or infinite values; replace them "
                "(e.g. np.nan_to_num(X)) before fitting"
            )
        if isinstance(X, torch.Tensor) and X.is_floating_point() and not torch.isfinite(X).all():
            raise ValueError(
                "the image tensor contains NaN or infinite values; replace them "
                "(e.g. torch.nan_to_num(X)) before fitting"
            )
        size = self.image_size
        return load_images(X, labels=y, image_size=size)

    def _check_training_set(self, images: ImageSet) -> int:
        n_images = len(images)
        if n_images < 2:
            raise ValueError(
                f"t-SimCNE needs at least 2 images to contrast (got {n_images}); "
                "pass more images"
            )
        if not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 2:
            raise ValueError(f"batch_size must be an int of at least 2, got {self.batch_size!r}")
        batch_size = int(self.batch_size)
        if batch_size > n_images:
            warnings.warn(
                f"batch_size={batch_size} is larger than the {n_images} images; using the "
                f"whole data set as one batch (batch_size={n_images})",
                UserWarning,
                stacklevel=3,
            )
            batch_size = n_images
        return batch_size

    @staticmethod
    def _augmenter(size, settings) -> Augmenter:
        """The paper's augmentations at ``size``, overridden by ``settings`` (the user's or
        the data's; None: none)."""
        settings = {} if settings is None else settings
        if not isinstance(settings, Mapping):
            raise TypeError(
                "augmentation must be a dict of Augmenter keyword arguments, e.g. "
                f"{{'crop_scale': (0.5, 1.0)}}, got {settings!r}"
            )
        known = set(inspect.signature(Augmenter).parameters) - {"out_size"}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(f"unknown augmentation setting(s) {unknown}; choose from {sorted(known)}")
        return Augmenter(size, **settings)

    def _backbone_is_fixed(self) -> bool:
        named_width = isinstance(self.backbone, str) and "-w" in self.backbone
        return not isinstance(self.backbone, str) or named_width or self.backbone_width is not None

    # ------------------------------------------------------------------ fitting
    def _build_trainer(self, images: ImageSet, callbacks) -> Trainer:
        epochs = epoch_tuple(self.total_epochs, "total_epochs")
        device = resolve_device(self.device)
        backbone, width = self.backbone, self.backbone_width
        # Validate the backbone before any time is spent measuring or training.
        if isinstance(backbone, str):
            build_backbone(backbone, width if width is not None else 1)
        batch_size = self._check_training_set(images)
        # the user's settings win over the data's; checked before any time is spent measuring
        settings = self.augmentation if self.augmentation is not None else images.augmentation
        settings = augmentation_for(images) if settings is None else settings  # data-derived
        user_augmenter = None if settings is None else self._augmenter(images.image_size, settings)
        started = time.perf_counter()  # the budget includes the check
        self.augmentation_check_ = (warn_if_destructive(images, user_augmenter, stacklevel=4)
                                    if self.augmentation_check else None)
        resolution = time_budget = augmenter = None
        num_threads, mixed_precision = self.num_threads, None
        if self.time_budget is not None:
            kwargs = dict(stage_ratio=epochs, learning_rate=self.learning_rate,
                          hidden_dim=self.hidden_dim, num_threads=self.num_threads,
                          verbose=self.verbose)
            if self._backbone_is_fixed():
                kwargs["candidates"] = [(backbone, width)]
            choice = plan_for_budget(
                self.time_budget, len(images), images.image_size, device, batch_size, **kwargs
            )
            if not self._backbone_is_fixed():
                backbone, width = choice.backbone, choice.width
            plan, resolution = choice.plan, choice.image_size
            seconds_left = self.time_budget - (time.perf_counter() - started)
            time_budget = choice.time_budget(seconds_left)
            augmenter = self._augmenter(resolution, settings)
            num_threads, mixed_precision = choice.num_threads, choice.mixed_precision
        else:
            plan = StagePlan.from_total_epochs(
                epochs, len(images), batch_size, base_lr=self.learning_rate
            )
            augmenter = user_augmenter
        return Trainer(
            images,
            plan,
            backbone=backbone,
            backbone_width=width,
            hidden_dim=self.hidden_dim,
            projection_dim=self.projection_dim,
            out_dim=self.out_dim,
            image_size=resolution,
            augmenter=augmenter,
            device=device,
            random_state=self.random_state,
            callbacks=callbacks,
            checkpoint_path=self.checkpoint_path,
            compile=self.compile,
            progress=self.verbose,
            num_threads=num_threads,
            time_budget=time_budget,
            mixed_precision=mixed_precision,
        )

    def prepare(self, X, y=None, callbacks: Sequence[Callable] | None = None) -> Trainer:
        """Step 1 of :meth:`fit`: a trainer ready to train on ``X``, not started.

        Loads and checks the images, chooses the network and the plan (under a
        ``time_budget`` this times the device) and builds the
        :class:`~tsimcne_widgets.engine.trainer.Trainer`.  Run it (``trainer.run()``,
        or ``trainer.start()`` and ``trainer.wait()``), then hand it to :meth:`adopt`:
        ``fit(X)`` is exactly that.

        Parameters
        ----------
        X, y, callbacks
            As for :meth:`fit`.

        Returns
        -------
        Trainer
            Also kept as ``trainer_``; ``labels_`` are set too.
        """
        images = self._load(X, y)
        trainer = self._build_trainer(images, list(callbacks or []))
        self.trainer_ = trainer
        self.labels_ = images.labels
        return trainer

    def adopt(self, trainer: Trainer) -> "TSimCNE":
        """Step 2 of :meth:`fit`: take a trainer's network and map as this fit's result.

        Parameters
        ----------
        trainer : Trainer
            One that has run (finished, stopped, or failed), e.g. from :meth:`prepare`.
            A stopped run gives a usable model and map; a failed one only the model
            (for inspection), and ``embedding_`` is removed.

        Returns
        -------
        TSimCNE
            ``self``, fitted: ``model_``, ``embedding_``, ``trainer_`` and the rest.

        Raises
        ------
        RuntimeError
            When the trainer has not started yet.
        """
        if trainer.state == "idle":
            raise RuntimeError("this trainer has not run yet; call trainer.run() (or "
                               "trainer.start() and trainer.wait()) before adopt(trainer)")
        self.trainer_ = trainer
        self.model_ = trainer.model
        self.device_ = trainer.device
        self.training_size_ = tuple(trainer.image_size)
        self.model_config_ = dict(trainer.model_config)
        if trainer.error is None:
            self.embedding_ = trainer.embed()
        elif hasattr(self, "embedding_"):
            del self.embedding_  # from an earlier fit: stale
        self.n_features_out_ = int(self.model_.out_dim)
        return self

    def fit(self, X, y=None, callbacks: Sequence[Callable] | None = None) -> "TSimCNE":
        """Train on images ``X``: :meth:`prepare`, run the trainer, :meth:`adopt`.

        Parameters
        ----------
        X
            Anything :func:`~tsimcne_widgets.data.load.load_images` accepts: arrays,
            tensors, an ImageSet, a torchvision-style dataset, a folder, file paths.
        y : array-like, optional
            Labels (kept as ``labels_``; training does not use them).
        callbacks : sequence of callable, optional
            ``callback(snapshot)`` after epochs; returning True stops training.

        Returns
        -------
        TSimCNE
            ``self``.

        Raises
        ------
        Exception
            Whatever made training fail (a non-finite loss, out of memory, a callback's
            exception).
        """
        return self._run(self.prepare(X, y, callbacks))

    def _run(self, trainer: Trainer) -> "TSimCNE":
        try:
            trainer.run()
        finally:
            # Also after a stop, a failure or Ctrl-C: the model (and map) so far.
            self.adopt(trainer)
        return self

    def fit_transform(self, X, y=None, callbacks: Sequence[Callable] | None = None) -> np.ndarray:
        """Train on ``X`` and return its map (:attr:`embedding_`)."""
        return self.fit(X, y, callbacks=callbacks).embedding_

    def resume(self, X, checkpoint: str | os.PathLike, y=None,
               callbacks: Sequence[Callable] | None = None) -> "TSimCNE":
        """Continue an interrupted fit from a training checkpoint.

        Parameters
        ----------
        X
            The same images the interrupted fit trained on.
        checkpoint : str or path-like
            The ``checkpoint_path`` of that fit; it keeps being updated.
        y, callbacks
            As for :meth:`fit`.
        """
        images = self._load(X, y)
        trainer = Trainer.resume_from(
            checkpoint,
            images,
            device=self.device,
            callbacks=list(callbacks or []),
            checkpoint_path=checkpoint if self.checkpoint_path is None else self.checkpoint_path,
            compile=self.compile,
            progress=self.verbose,
            num_threads=self.num_threads,
        )
        self.trainer_, self.labels_ = trainer, images.labels
        return self._run(trainer)

    # ------------------------------------------------------------------ using a fitted model
    def _check_fitted(self, what: str) -> None:
        if getattr(self, "model_", None) is None:
            raise NotFittedError(
                f"this TSimCNE instance is not fitted yet; call fit(X) (or TSimCNE.load(path)) "
                f"before {what}"
            )

    def transform(self, X, batch_size: int = 512) -> np.ndarray:
        """Map new images with the trained network (no further training).

        Images are brought to the training resolution.  Returns ``(N, d)`` float32 with
        ``d`` the output width of the last stage that ran (``out_dim`` after stage 2).
        """
        self._check_fitted("transform")
        tensor = images_to_tensor(self._load(X))
        return embed(self.model_, tensor, self.training_size_, batch_size=batch_size).cpu().numpy()

    def save(self, path: str | os.PathLike) -> Path:
        """Save the fitted network, its settings, the map and labels (atomically).

        Load with :meth:`TSimCNE.load`; the file loads with ``weights_only=True``.
        """
        self._check_fitted("save")
        if self.model_config_.get("backbone") == "custom":
            raise ValueError("a model with a custom backbone module cannot be saved by name; "
                             "save model_.state_dict() with torch.save instead")
        params = {key: getattr(self, key) for key in (
            "total_epochs", "batch_size", "backbone_width", "projection_dim", "hidden_dim",
            "out_dim", "learning_rate", "random_state", "time_budget", "image_size")}
        params["total_epochs"] = list(epoch_tuple(params["total_epochs"], "total_epochs"))
        params["backbone"] = self.backbone if isinstance(self.backbone, str) else "custom"
        labels = getattr(self, "labels_", None)
        state = {
            "kind": "model",
            "params": params,
            "model_config": self.model_config_,
            "training_size": list(self.training_size_),
            "model": {k: v.detach().cpu() for k, v in self.model_.state_dict().items()},
            "embedding": getattr(self, "embedding_", None),
            "labels": None if labels is None else [str(v) for v in labels],
        }
        return save_checkpoint(path, state)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> "TSimCNE":
        """A fitted estimator from a file written by :meth:`save` (``weights_only`` loading)."""
        state = load_checkpoint(path)
        if state.get("kind") != "model":
            raise ValueError(
                f"{str(path)!r} is a training checkpoint, not a saved model; continue it with "
                "TSimCNE().resume(X, path), or load a file written by TSimCNE.save"
            )
        params = dict(state["params"])
        estimator = cls(device=device, **params)
        config = state["model_config"]
        module, feature_dim = build_backbone(config["backbone"], config["backbone_width"])
        out_dim = state["model"]["head.2.weight"].shape[0]  # projection_dim after one stage
        model = TSimCNENet(module, feature_dim, config["hidden_dim"], out_dim)
        model.load_state_dict(state["model"])
        estimator.device_ = resolve_device(device)
        model = model.to(estimator.device_)
        if choose_memory_layout(model, estimator.device_):
            model = model.to(memory_format=torch.channels_last)
        estimator.model_ = model.eval()
        estimator.model_config_ = dict(config)
        estimator.training_size_ = tuple(state["training_size"])
        estimator.n_features_out_ = int(model.out_dim)
        if state.get("embedding") is not None:
            estimator.embedding_ = state["embedding"].numpy()
        labels = state.get("labels")
        estimator.labels_ = None if labels is None else np.asarray(labels, dtype=object)
        estimator.trainer_ = None
        return estimator

