"""Train the same small CNN on the same data, batch size and optimiser in convbench (backend auto)
and in PyTorch (CPU), side by side in one process; print the ratio of time per epoch.

    python bench/train_vs_torch.py [--epochs 30] [--threads N]

Both use the digits split of convbench.train (same seed), batch 64, Adam (lr 2e-3, cosine
schedule), the same random shifts, and He-uniform / PyTorch-default initialisation. Steady-state
time per epoch is the median over epochs after the first (the first includes JIT compilation and
autotuning; it is printed apart).
"""
import argparse
import time

import numpy as np


def torch_run(x, y, tr, va, te, epochs, batch, lr, seed):
    import torch
    from torch import nn

    from convbench.train.data import augment
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * 2 * 2, 10))
    for m in model:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(seed + 1)
    times = []
    for _ in range(epochs):
        model.train()
        t0 = time.perf_counter()
        perm = rng.permutation(len(tr))
        for i in range(0, len(tr) - batch + 1, batch):
            idx = tr[perm[i:i + batch]]
            xb = torch.from_numpy(augment(x[idx], rng, 1))
            opt.zero_grad()
            loss = loss_fn(model(xb), torch.from_numpy(y[idx]))
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
        sched.step()
    model.eval()
    with torch.no_grad():
        acc = (model(torch.from_numpy(x[te])).argmax(1).numpy() == y[te]).mean()
    return times, float(acc)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    from convbench.threads import set_threads
    from convbench.train import TrainConfig, train
    from convbench.train import data as datasets
    set_threads(args.threads)
    cfg = TrainConfig(epochs=args.epochs, patience=args.epochs)     # no early stop: same epochs
    s = train(cfg, None, verbose=False)
    cb_times = [h["epoch_s"] for h in s["history"]]
    ds = datasets.load(cfg.data)
    tr, va, te = datasets.split(ds, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    mean, std = float(ds.x[tr].mean()), float(ds.x[tr].std())
    x = ((ds.x - mean) / std).astype(np.float32)
    t_times, t_acc = torch_run(x, ds.y, tr, va, te, args.epochs, cfg.batch_size, cfg.lr, cfg.seed)
    cb_epoch, t_epoch = float(np.median(cb_times[1:])), float(np.median(t_times[1:]))
    print(f"convbench (auto): {cb_epoch * 1e3:.1f} ms/epoch (first epoch {cb_times[0]:.2f} s), "
          f"test accuracy {s['test_accuracy']:.4f}")
    print(f"torch:            {t_epoch * 1e3:.1f} ms/epoch (first epoch {t_times[0]:.2f} s), "
          f"test accuracy {t_acc:.4f}")
    print(f"ratio convbench/torch time per epoch: {cb_epoch / t_epoch:.2f} (target <= 1.0)")
    print("backends chosen:", s["backends"])


if __name__ == "__main__":
    main()
