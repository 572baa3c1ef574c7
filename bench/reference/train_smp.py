#!/usr/bin/env python3
"""bench/reference/train_smp.py: the unetcu recipe in PyTorch + segmentation_models_pytorch, the
reference that unetcu's speed and accuracy are compared with.

  --bench          times training steps (batch 16, 128x128 by default) on a synthetic batch in
                   each mode and prints a table: median step time over --steps steps after
                   --warmup steps, and images/s. Modes:
                     eager               fp32 (on a GPU cuDNN may use TF32, PyTorch's default)
                     channels_last_bf16  channels_last tensors, bf16 autocast
                     compile             torch.compile(model), fp32
                     cuda_graph          the whole step (forward, Dice, backward, Adam with
                                         capturable=True) captured once and replayed; GPU only
                   A mode that cannot run here says why and is skipped.
  --train DATA     trains the recipe on a folder in unetcu's layout (DATA/images/<stem>.jpg|png,
                   DATA/masks/<stem>_segmentation.png): smp.Unet("resnet34", classes=1,
                   encoder_weights None or imagenet), DiceLoss(binary, from_logits), Adam 1e-4,
                   batch 16, 128x128, unetcu's seeded 95/2.5/2.5 split (the same images in each
                   part as `unetcu train --seed S`: its generator is reproduced below), and
                   writes OUT/metrics.jsonl with unetcu's keys (epoch, train_loss, train_iou,
                   val_loss, val_iou, val_dice, images_per_sec, epoch_seconds) and OUT/test.json
                   from the best-val_iou weights, so the curves compare directly.

--model replica runs the same network and loss written in plain torch.nn
(bench/reference/unet_replica.py, identical to smp's results on the CPU: check_replica.py) where
segmentation_models_pytorch or torchvision cannot be installed; --model auto (the default) uses
smp when it imports.

Images are resized with area averaging (PIL's box filter), masks likewise and thresholded at
half range back to 0/1, then normalised with /255 and ImageNet's mean/std, as unetcu does. The
batch order within an epoch is seeded but is not unetcu's. IoU is smp's micro-imagewise IoU with
the prediction sigmoid(logit) > 0.5 (an image with an empty mask and an empty prediction counts
as 1); the loss of an epoch is the mean of its batch losses.
"""
import argparse
import copy
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

MODES = ["eager", "channels_last_bf16", "compile", "cuda_graph"]
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
MASK64 = (1 << 64) - 1


# ---- unetcu's generator (engine/rng.h), for the same split -----------------------------------

def _splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


class UnetcuRng:
    """xoshiro256** seeded by splitmix64, as engine/rng.h."""

    def __init__(self, seed):
        s = seed & MASK64
        self.state = []
        for _ in range(4):
            s, word = _splitmix64(s)
            self.state.append(word)

    @staticmethod
    def _rotl(x, k):
        return ((x << k) | (x >> (64 - k))) & MASK64

    def next_u64(self):
        s = self.state
        result = (self._rotl((s[1] * 5) & MASK64, 7) * 9) & MASK64
        t = (s[1] << 17) & MASK64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = self._rotl(s[3], 45)
        return result

    def below(self, n):
        reject_under = (-n) % n  # 2^64 mod n
        while True:
            x = self.next_u64()
            if x >= reject_under:
                return x % n


def split_random(n, seed, val_frac=0.025, test_frac=0.025):
    """data/split.cpp's split_random: shuffle 0..n-1, then val, test, train."""
    def part(frac):
        return 0 if frac == 0 else max(1, int(math.floor(n * frac + 0.5)))
    n_val, n_test = part(val_frac), part(test_frac)
    if n - n_val - n_test < 1:
        sys.exit(f"train_smp.py: error: too few images for the split: {n}")
    order = list(range(n))
    rng = UnetcuRng(seed)
    for i in range(n, 1, -1):
        j = rng.below(i)
        order[i - 1], order[j] = order[j], order[i - 1]
    return (sorted(order[n_val + n_test:]), sorted(order[:n_val]),
            sorted(order[n_val:n_val + n_test]))


# ---- the model, the loss, the metrics --------------------------------------------------------

def resolve_model(kind):
    """"smp" or "replica" for --model auto|smp|replica: auto takes smp when it imports."""
    if kind != "auto":
        return kind
    try:
        import segmentation_models_pytorch  # noqa: F401
        return "smp"
    except ImportError:
        return "replica"


def make_model(kind, encoder_weights, device):
    if kind == "replica":
        # The same network in plain torch.nn (bench/reference/unet_replica.py; checked against
        # smp by check_replica.py), for machines where smp cannot be installed.
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import unet_replica
        if encoder_weights is not None:
            sys.exit("train_smp.py: error: --encoder-weights imagenet needs smp (--model smp)")
        return unet_replica.UnetResNet34().to(device), unet_replica.dice_loss
    import segmentation_models_pytorch as smp
    model = smp.Unet("resnet34", encoder_weights=encoder_weights, classes=1)
    loss_fn = smp.losses.DiceLoss("binary", from_logits=True)
    return model.to(device), loss_fn


def image_counts(logits, target):
    """Per image (tp, fp, fn) with the prediction sigmoid(logit) > 0.5."""
    pred = (logits.detach().float().sigmoid() > 0.5).flatten(1)
    truth = target.flatten(1) > 0.5
    tp = (pred & truth).sum(1)
    fp = (pred & ~truth).sum(1)
    fn = (~pred & truth).sum(1)
    return tp, fp, fn


def iou_dice_sums(logits, target):
    tp, fp, fn = (v.double() for v in image_counts(logits, target))
    iou_den, dice_den = tp + fp + fn, 2 * tp + fp + fn
    iou = torch.where(iou_den > 0, tp / iou_den.clamp_min(1), torch.ones_like(tp))
    dice = torch.where(dice_den > 0, 2 * tp / dice_den.clamp_min(1), torch.ones_like(tp))
    return iou.sum().item(), dice.sum().item()


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


# ---- --bench ---------------------------------------------------------------------------------

def synthetic_batch(batch, size, device):
    g = torch.Generator().manual_seed(12345)
    images = torch.randint(0, 256, (batch, 3, size, size), generator=g, dtype=torch.uint8)
    x = (images.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    masks = [((xx - size // 2 - n) ** 2 + (yy - size // 2) ** 2 < size * size / 10).float()
             for n in range(batch)]
    y = torch.stack(masks).unsqueeze(1)
    return x.to(device), y.to(device)


def mode_unavailable(mode, device):
    if mode == "cuda_graph" and device.type != "cuda":
        return "needs a CUDA device"
    if mode == "channels_last_bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "this GPU has no bf16"
    return None


def bench_mode(mode, args, device):
    torch.manual_seed(0)
    model, loss_fn = make_model(args.model, None, device)
    model.train()
    x, y = synthetic_batch(args.batch, args.size, device)
    autocast = mode == "channels_last_bf16"
    if autocast:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    capturable = mode == "cuda_graph"
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, capturable=capturable)
    net = torch.compile(model) if mode == "compile" else model

    def step():
        opt.zero_grad(set_to_none=not capturable)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        return loss

    t0 = time.perf_counter()
    first_loss = step().item()
    setup_s = time.perf_counter() - t0
    run = step
    if mode == "cuda_graph":
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=False)
        with torch.cuda.graph(graph):
            static_loss = step()

        def run():
            graph.replay()
            return static_loss
    for _ in range(args.warmup):
        run()
    synchronize(device)
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - t)
    median = statistics.median(times)
    return {"mode": mode, "median_ms": median * 1e3, "images_per_sec": args.batch / median,
            "first_loss": first_loss, "first_step_s": setup_s, "steps": len(times)}


def run_bench(args, device):
    model = "smp" if args.model == "smp" else "the smp replica (unet_replica.py)"
    print(f"PyTorch {torch.__version__} + {model}: training step, batch {args.batch}, {args.size}x{args.size}, "
          f"device {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda"
                                else f", {torch.get_num_threads()} threads"), flush=True)
    rows = []
    for mode in args.modes.split(","):
        if mode not in MODES:
            sys.exit(f"train_smp.py: error: unknown mode '{mode}' (choose from {', '.join(MODES)})")
        why = mode_unavailable(mode, device)
        if why:
            print(f"{mode}: skipped ({why})", flush=True)
            continue
        try:
            r = bench_mode(mode, args, device)
        except Exception as e:  # a mode this PyTorch cannot run is reported, not fatal
            print(f"{mode}: failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", flush=True)
            continue
        print(f"{mode}: median {r['median_ms']:.1f} ms/step over {r['steps']} steps, "
              f"{r['images_per_sec']:.1f} images/s (first step {r['first_step_s']:.1f} s, "
              f"loss {r['first_loss']:.7f})", flush=True)
        rows.append(r)
    print(f"\n{'mode':<20} {'ms/step':>10} {'images/s':>10}")
    for r in rows:
        print(f"{r['mode']:<20} {r['median_ms']:>10.1f} {r['images_per_sec']:>10.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


# ---- --train ---------------------------------------------------------------------------------

def load_dataset(root, size, limit):
    from PIL import Image
    images_dir, masks_dir = Path(root) / "images", Path(root) / "masks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        sys.exit(f"train_smp.py: error: {root}: expected images/ and masks/ folders")
    pairs = []
    for p in sorted(images_dir.iterdir()):
        if p.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            continue
        m = masks_dir / f"{p.stem}_segmentation.png"
        if not m.exists():
            sys.exit(f"train_smp.py: error: {p}: no mask {m}")
        pairs.append((p, m))
    pairs.sort(key=lambda pm: pm[0].stem)
    if limit:
        pairs = pairs[:limit]
    if not pairs:
        sys.exit(f"train_smp.py: error: {root}: no image/mask pairs")
    imgs = np.zeros((len(pairs), size, size, 3), np.uint8)
    masks = np.zeros((len(pairs), size, size), np.uint8)
    for i, (p, m) in enumerate(pairs):
        try:
            imgs[i] = np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BOX))
            mk = np.asarray(Image.open(m).convert("L").resize((size, size), Image.BOX))
        except OSError as e:
            sys.exit(f"train_smp.py: error: {p}: {e}")
        masks[i] = mk >= 128
    return imgs, masks


def to_batch(imgs, masks, idx, device):
    x = torch.from_numpy(imgs[idx]).to(device).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(MEAN, device=device).view(1, 3, 1, 1)) / torch.tensor(STD, device=device).view(1, 3, 1, 1)
    y = torch.from_numpy(masks[idx]).to(device).unsqueeze(1).float()
    return x, y


def evaluate(model, loss_fn, imgs, masks, indices, batch, device):
    model.eval()
    loss_sum, iou_sum, dice_sum, batches = 0.0, 0.0, 0.0, 0
    with torch.no_grad():
        for b in range(0, len(indices), batch):
            x, y = to_batch(imgs, masks, indices[b:b + batch], device)
            logits = model(x)
            loss_sum += loss_fn(logits, y).item()
            iou, dice = iou_dice_sums(logits, y)
            iou_sum, dice_sum, batches = iou_sum + iou, dice_sum + dice, batches + 1
    n = max(1, len(indices))
    return {"loss": loss_sum / max(1, batches), "iou": iou_sum / n, "dice": dice_sum / n}


def run_train(args, device):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    imgs, masks = load_dataset(args.train, args.size, args.limit)
    train_idx, val_idx, test_idx = split_random(len(imgs), args.seed, args.val_frac, args.test_frac)
    print(f"split: {len(train_idx)} train, {len(val_idx)} val, {len(test_idx)} test (seed {args.seed})",
          file=sys.stderr, flush=True)
    torch.manual_seed(args.seed)
    weights = None if args.encoder_weights == "none" else args.encoder_weights
    model, loss_fn = make_model(args.model, weights, device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    metrics_path = out / "metrics.jsonl"
    metrics_path.write_text("")
    best_iou, best_state = -1.0, None
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(args.seed * 1000003 + epoch))
        loss_sum, iou_sum, seen, batches = 0.0, 0.0, 0, 0
        for b in range(0, len(order), args.batch):
            idx = [train_idx[i] for i in order[b:b + args.batch].tolist()]
            x, y = to_batch(imgs, masks, idx, device)
            opt.zero_grad()
            logits = model(x)
            loss = loss_fn(logits, y)
            loss.backward()
            opt.step()
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                sys.exit(f"train_smp.py: error: training diverged at epoch {epoch + 1}; try a smaller --lr")
            loss_sum += loss_value
            iou_sum += iou_dice_sums(logits, y)[0]
            seen += len(idx)
            batches += 1
        synchronize(device)
        train_seconds = time.perf_counter() - t0
        val = evaluate(model, loss_fn, imgs, masks, val_idx, args.batch, device)
        epoch_seconds = time.perf_counter() - t0
        m = {"epoch": epoch + 1, "train_loss": loss_sum / batches, "train_iou": iou_sum / seen,
             "val_loss": val["loss"], "val_iou": val["iou"], "val_dice": val["dice"],
             "images_per_sec": seen / train_seconds, "epoch_seconds": epoch_seconds}
        with metrics_path.open("a") as f:
            f.write(json.dumps(m) + "\n")
        print(f"epoch {epoch + 1}/{args.epochs}: loss {m['train_loss']:.4f} iou {m['train_iou']:.4f} | "
              f"val loss {m['val_loss']:.4f} iou {m['val_iou']:.4f} dice {m['val_dice']:.4f} | "
              f"{m['images_per_sec']:.1f} img/s, {epoch_seconds:.1f} s", file=sys.stderr, flush=True)
        if val["iou"] > best_iou:
            best_iou, best_state = val["iou"], copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    test = evaluate(model, loss_fn, imgs, masks, test_idx, args.batch, device)
    tmp = out / "test.json.tmp"
    tmp.write_text(json.dumps({"test_iou": test["iou"], "test_dice": test["dice"],
                               "test_loss": test["loss"], "n_images": len(test_idx)}) + "\n")
    os.replace(tmp, out / "test.json")
    print(f"test: iou {test['iou']:.4f} dice {test['dice']:.4f} loss {test['loss']:.4f} "
          f"({len(test_idx)} images); {metrics_path}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--bench", action="store_true", help="time training steps on a synthetic batch")
    what.add_argument("--train", metavar="DATA", help="train the recipe on DATA (unetcu's layout)")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (default: PyTorch's choice)")
    ap.add_argument("--batch", "--batch-size", dest="batch", type=int, default=16)
    ap.add_argument("--size", "--image-size", dest="size", type=int, default=128)
    ap.add_argument("--modes", default=",".join(MODES), help="--bench: comma-separated modes")
    ap.add_argument("--warmup", type=int, default=3, help="--bench: untimed steps after the first")
    ap.add_argument("--steps", type=int, default=10, help="--bench: timed steps (median)")
    ap.add_argument("--json", help="--bench: also write the rows to this file")
    ap.add_argument("--out", default="runs/smp", help="--train: output folder")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-frac", type=float, default=0.025)
    ap.add_argument("--test-frac", type=float, default=0.025)
    ap.add_argument("--limit", type=int, default=0, help="--train: use only the first N pairs")
    ap.add_argument("--encoder-weights", default="none", choices=["none", "imagenet"])
    ap.add_argument("--model", default="auto", choices=["auto", "smp", "replica"],
                    help="smp's Unet, or the same network in plain torch.nn (unet_replica.py); "
                         "auto: smp when it imports (default)")
    args = ap.parse_args()
    args.model = resolve_model(args.model)
    if args.batch < 1 or args.size < 32 or args.size % 32:
        ap.error("--batch must be >= 1 and --size a positive multiple of 32")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is available")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.bench:
        run_bench(args, device)
    else:
        run_train(args, device)


if __name__ == "__main__":
    main()
