"""The README's digits map: ``TSimCNE(time_budget=180)`` on a CPU, its kNN accuracy and picture.

    python benchmarks/readme_map.py      # writes docs/digits_map.png
"""
import time

from tsimcne_widgets import TSimCNE
from tsimcne_widgets.data.datasets import load_digits
from tsimcne_widgets.engine.evaluation import knn_accuracy
from tsimcne_widgets.render.picture import save_map_png

digits = load_digits()
started = time.time()
model = TSimCNE(time_budget=180, random_state=0, verbose=True)
xy = model.fit_transform(digits)
seconds = time.time() - started
score = knn_accuracy(xy, digits.labels, k=15)
plan = model.trainer_.plan
print(f"wall {seconds:.0f} s, 2-D 15-NN accuracy {score}, epochs {plan.epochs}")
save_map_png(xy, digits.labels, "docs/digits_map.png",
             title=f"t-SimCNE, scikit-learn digits, time_budget=180 on 2 CPU cores "
                   f"(15-NN {score.mean:.3f})")
