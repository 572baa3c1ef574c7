#!/usr/bin/env python3
"""bench/reference/check_replica.py: checks that bench/reference/unet_replica.py computes what
segmentation_models_pytorch does: under one seed both start from the same weights (the replica
builds and initialises its modules in smp's order), smp's state_dict loads into the replica
strictly (every name and shape the same), both run a training step in
train mode on the same batch (logits, DiceLoss from logits, every parameter gradient, the
BatchNorm running statistics), and the replica's state_dict loads back into smp strictly.
Exits 1 when anything differs by more than --tol (relative to the tensor's norm).

  check_replica.py [--batch 4] [--size 64] [--tol 1e-6]
"""
import argparse
import sys

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import unet_replica  # noqa: E402


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--tol", type=float, default=1e-6)
    args = ap.parse_args()
    import segmentation_models_pytorch as smp

    torch.manual_seed(3)
    ref = smp.Unet("resnet34", encoder_weights=None, classes=1)
    torch.manual_seed(3)
    rep = unet_replica.UnetResNet34()
    worst = {}
    ref_state = ref.state_dict()
    worst["initial weights"] = max(rel(v, ref_state[k]) for k, v in rep.state_dict().items()
                                   if v.is_floating_point())
    rep.load_state_dict(ref_state, strict=True)
    ref.train()
    rep.train()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=g)
    y = (torch.rand(args.batch, 1, args.size, args.size, generator=g) < 0.3).float()
    loss_fn = smp.losses.DiceLoss("binary", from_logits=True)

    out_ref, out_rep = ref(x), rep(x)
    worst["logits"] = rel(out_rep, out_ref)
    loss_ref, loss_rep = loss_fn(out_ref, y), unet_replica.dice_loss(out_rep, y)
    worst["loss"] = rel(loss_rep.detach(), loss_ref.detach())
    loss_ref.backward()
    loss_rep.backward()
    grads_ref = dict(ref.named_parameters())
    worst["gradients"] = max(rel(p.grad, grads_ref[n].grad) for n, p in rep.named_parameters())
    buffers_ref = dict(ref.named_buffers())
    worst["running statistics"] = max(rel(b, buffers_ref[n]) for n, b in rep.named_buffers()
                                      if b.is_floating_point())
    ref.load_state_dict(rep.state_dict(), strict=True)

    print(f"smp {smp.__version__}, torch {torch.__version__}; batch {args.batch}, "
          f"{args.size}x{args.size}, train mode; relative differences, replica vs smp:")
    for what, value in worst.items():
        print(f"  {what:<20} {value:.3e}")
    print(f"  {len(grads_ref)} parameters and {len(buffers_ref)} buffers, names and shapes the same "
          "both ways", flush=True)
    bad = [w for w, v in worst.items() if not v <= args.tol]
    if bad:
        sys.exit(f"check_replica.py: error: {', '.join(bad)} differ by more than {args.tol}")


if __name__ == "__main__":
    main()
