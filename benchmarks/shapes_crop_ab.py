"""Shapes as a plain array: the derived crop floor (0.5645) against the tuned one (0.5).

Fixed epochs (40/4/16), ResNet-10 width 8 at 16 px, batch 256, flips on, seeds 0 and 1, so
the load of a shared machine changes the wall time only, not what is trained.  Prints the
2-D kNN (k = 15, 15 % held out, mean of 5 splits) of each fit.

    python benchmarks/shapes_crop_ab.py
"""

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from tsimcne_widgets.data.datasets import make_shapes  # noqa: E402
from tsimcne_widgets.engine.estimator import TSimCNE  # noqa: E402
from tsimcne_widgets.engine.evaluation import knn_accuracy  # noqa: E402

print("CPU", torch.backends.cpu.get_cpu_capability(), flush=True)
shapes = make_shapes()
X, y = np.array(shapes.images), shapes.labels
for seed in (0, 1):
    for crop in (0.5, 0.5645):
        started = time.perf_counter()
        estimator = TSimCNE(total_epochs=(40, 4, 16), backbone="resnet10", backbone_width=8,
                            image_size=16, batch_size=256, random_state=seed,
                            augmentation={"crop_scale": (crop, 1.0), "flip_p": 0.5})
        estimator.fit(X)
        print(f"seed {seed} crop {crop}: knn "
              f"{knn_accuracy(estimator.embedding_, y, k=15, test_size=0.15)} "
              f"{time.perf_counter() - started:.0f} s", flush=True)
