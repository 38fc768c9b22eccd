"""The README's digits map: a fixed 100/10/40-epoch CPU run, its kNN accuracy and picture."""
import time, numpy as np
from tsimcne_widgets import TSimCNE
from tsimcne_widgets.datasets import load_digits
from tsimcne_widgets.evaluation import knn_accuracy
from tsimcne_widgets.render.picture import save_map_png
d = load_digits()
t = time.time()
m = TSimCNE(total_epochs=(100, 10, 40), batch_size=256, backbone="resnet18-w16", random_state=0, num_threads=1)
Y = m.fit_transform(d)
print("wall", time.time() - t, "knn", knn_accuracy(Y, d.labels))
save_map_png(Y, d.labels, "docs/digits_map.png", title="t-SimCNE map of scikit-learn digits (100/10/40 epochs, CPU)")

