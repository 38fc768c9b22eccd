"""Research harness for the short-run recipe: one configuration per call, epoch-based.

Runs are fixed in epochs, not seconds, so that a busy machine changes only their wall
time, not their result; run them pinned to one core (``OMP_NUM_THREADS=1 taskset -c 0``)
to compare wall times.  Each call appends one JSON line (settings, 2-D kNN, wall time)
to ``--results``.  The figures quoted in ``tsimcne_widgets/engine/planner.py``, in
``tsimcne_widgets/data/datasets.py`` and in benchmarks/README.md ("Short-run recipe") came
from this script.

Examples
--------
    python benchmarks/recipe_search.py --data digits --epochs 150,15,60 --lr3 0.1 \
        --crop 0.56 --backbone resnet10-w8 --threads 1
    python benchmarks/recipe_search.py --data shapes --epochs 60 --res 16 --crop 0.5 \
        --backbone resnet10-w8 --threads 1   # stage 1 only: kNN of the 128-D output
"""
import argparse, json, math, sys, time
import numpy as np, torch
from tsimcne_widgets.engine.trainer import Trainer
from tsimcne_widgets.engine.schedule import StagePlan
from tsimcne_widgets.engine.augment import Augmenter
from tsimcne_widgets.engine.loss import cauchy_infonce
from tsimcne_widgets.engine.evaluation import knn_accuracy

p = argparse.ArgumentParser()
p.add_argument("--data", default="digits")
p.add_argument("--n", type=int, default=0)
p.add_argument("--epochs", default="100,10,40")
p.add_argument("--batch", type=int, default=256)
p.add_argument("--lr", type=float, default=None)
p.add_argument("--lr2", type=float, default=1.0)   # factor of base lr
p.add_argument("--lr3", type=float, default=0.001)
p.add_argument("--warm", default="10,0,10")
p.add_argument("--crop", type=float, default=0.2)
p.add_argument("--res", type=int, default=0)
p.add_argument("--backbone", default="resnet18-w16")
p.add_argument("--cache2", type=int, default=0, help="cached stage 2: K views per image")
p.add_argument("--steps2", type=int, default=0, help="steps of cached stage 2")
p.add_argument("--jit", default="0.4,0.4,0.4,0.1")
p.add_argument("--gray", type=float, default=0.2)
p.add_argument("--flip", type=float, default=0.5)
p.add_argument("--threads", type=int, default=0)
p.add_argument("--preres", type=int, default=0)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--tag", default="")
p.add_argument("--results", default="recipe_search.jsonl", help="JSON lines to append to")
p.add_argument("--cache-dir", default=".", help="where cached stage-1 models go (--cache2)")
a = p.parse_args()

if a.data == "digits":
    from tsimcne_widgets.data.datasets import load_digits
    ims = load_digits()
elif a.data == "shapes":
    from tsimcne_widgets.data.datasets import make_shapes
    ims = make_shapes()
elif a.data == "cifar":
    from tsimcne_widgets.data.datasets import cifar10_folder
    from tsimcne_widgets.data.load import load_images
    ims = load_images(str(cifar10_folder() / "test"))
images, labels = ims.images, ims.labels
if a.n:
    idx = np.random.default_rng(0).permutation(len(images))[: a.n]
    images, labels = images[idx], labels[idx]
if a.preres:
    t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    t = torch.nn.functional.interpolate(t, size=(a.preres, a.preres), mode="bilinear", antialias=True, align_corners=False)
    images = t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
res = a.res or images.shape[1]
epochs = tuple(int(e) for e in a.epochs.split(","))
warm = tuple(int(w) for w in a.warm.split(","))
aug = Augmenter(res, crop_scale=(a.crop, 1.0), jitter=tuple(float(j) for j in a.jit.split(",")), grayscale_p=a.gray, flip_p=a.flip)
if a.threads: torch.set_num_threads(a.threads)
t0 = time.perf_counter()
if not a.cache2:
    plan = StagePlan.from_total_epochs(epochs, len(images), a.batch, base_lr=a.lr,
                                       lr_factors=(1.0, a.lr2, a.lr3), warmup_epochs=warm)
    tr = Trainer(images, plan, backbone=a.backbone, augmenter=aug, device="cpu", random_state=a.seed)
    tr.run()
    xy = tr.embed()
    hist = tr.losses
else:
    plan1 = StagePlan.from_total_epochs((epochs[0],), len(images), a.batch, base_lr=a.lr, warmup_epochs=warm[:1])
    tr = Trainer(images, plan1, backbone=a.backbone, augmenter=aug, device="cpu", random_state=a.seed)
    import os
    key = f"{a.cache_dir}/s1_{a.data}_{a.n}_{epochs[0]}_{a.batch}_{a.crop}_{res}_{a.backbone}_{a.lr}_{warm[0]}_{a.seed}_{a.jit}_{a.gray}_{a.preres}.pt"
    if os.path.exists(key):
        st = torch.load(key)
        tr.model.load_state_dict(st["model"]); tr.losses = st["losses"]
    else:
        tr.run()
        torch.save({"model": tr.model.state_dict(), "losses": tr.losses}, key)
    z128 = tr.embed()
    t1 = time.perf_counter()
    model = tr.model
    # cached stage 2
    gen = torch.Generator().manual_seed(a.seed + 7)
    model.replace_output_layer(2, generator=gen)
    model.set_stage(2); model.eval()
    X = tr.images
    feats = []
    with torch.no_grad():
        for k in range(a.cache2):
            hs = []
            for s in range(0, len(X), 512):
                v = aug(X[s:s+512], gen, channels_last=True)
                hs.append(model.head[:-1](model.features(v)))
            feats.append(torch.cat(hs))
    H = torch.stack(feats, 1)  # N, K, 1024
    t_cache = time.perf_counter() - t1
    layer = model.output_layer
    base = plan1.base_lr
    opt = torch.optim.SGD(layer.parameters(), lr=base * a.lr2, momentum=0.9, weight_decay=5e-4)
    n = len(X); B = plan1.batch_size
    steps = a.steps2 or epochs[1] * (n // B)
    for step in range(steps):
        lr = base * a.lr2 * 0.5 * (1 + math.cos(math.pi * (step + 1) / steps))
        for g in opt.param_groups: g["lr"] = lr
        idx = torch.randint(0, n, (B,), generator=gen)
        kk = torch.rand(B, a.cache2, generator=gen).argsort(1)[:, :2]
        ha = H[idx, kk[:, 0]]; hb = H[idx, kk[:, 1]]
        loss = cauchy_infonce(layer(ha), layer(hb))
        opt.zero_grad(); loss.backward()
        torch.nn.utils.clip_grad_value_(layer.parameters(), 4.0)
        opt.step()
    t2 = time.perf_counter()
    print(f"stage2 cached: cache {t_cache:.1f}s, {steps} steps {t2-t1-t_cache:.1f}s, loss {loss.item():.3f}")
    model.set_stage(1)  # train everything
    plan3 = StagePlan.from_total_epochs((epochs[2],), len(images), a.batch, base_lr=base * a.lr3,
                                        warmup_epochs=warm[2:3])
    tr3 = Trainer(images, plan3, model=model, augmenter=aug, device="cpu", random_state=a.seed + 1)
    tr3.run()
    xy = tr3.embed()
    hist = tr.losses + tr3.losses
wall = time.perf_counter() - t0
acc = knn_accuracy(xy, labels, k=15, test_size=0.15, n_splits=5).mean
out = dict(vars(a), knn=round(acc, 4), wall=round(wall, 1), spread=float(np.std(xy)),
           loss_end=round(hist[-1], 3))
if a.cache2:
    out["knn128"] = round(knn_accuracy(z128, labels, k=15, test_size=0.15).mean, 4)
print(json.dumps(out))
with open(a.results, "a") as f:
    f.write(json.dumps(out) + "\n")
