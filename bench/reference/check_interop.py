"""bench/reference/check_interop.py: weights move both ways between unetcu and PyTorch + smp,
with weights that are not an initialisation, and predictions agree.

  1. unetcu -> smp: `unetcu train` (a short run on generated data) writes best.safetensors; it
     loads into smp.Unet("resnet34", classes=1) with load_state_dict(strict=True), and smp's
     eval-mode sigmoid equals `unetcu predict --probs` on the very bytes unetcu fed
     (--save-inputs).
  2. smp -> unetcu: smp's model, its encoder from a torchvision ResNet-34 export
     (export_encoder_weights.py), trained a few Adam steps in PyTorch, saved with
     safetensors.torch.save_file(model.state_dict()); `unetcu predict --weights` on that file
     gives smp's probabilities.
  3. --encoder-weights: `unetcu train --encoder-weights FILE --lr 0` keeps the encoder's weights,
     so its checkpoint's encoder convolutions equal torchvision's bit for bit.

Usage (from the repository root, after building):
  python bench/reference/check_interop.py --unetcu build/unetcu
Exits non-zero on the first disagreement; prints one line per check.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import safetensors.torch
import segmentation_models_pytorch as smp
import torch

from make_parity_fixture import network_input

TOLERANCE = 1e-4  # probabilities; one eval forward pass in fp32 on both sides


def run(cmd):
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)


def smp_model(state):
    model = smp.Unet("resnet34", encoder_weights=None, in_channels=3, classes=1)
    model.load_state_dict(state, strict=True)
    return model.eval()


def compare_predict(unetcu, weights, data_dir, model, work, name, size=64):
    out = os.path.join(work, name.replace(" ", "_"))
    run([unetcu, "predict", "--weights", weights, "--image-size", str(size), "--device", "cpu",
         "--probs", "--save-inputs", "--out", out, data_dir])
    stems = sorted(f[: -len("_probs.npy")] for f in os.listdir(out) if f.endswith("_probs.npy"))
    probs = np.stack([np.load(os.path.join(out, s + "_probs.npy")) for s in stems])
    images = np.stack([np.load(os.path.join(out, s + "_input.npy")) for s in stems])
    with torch.no_grad():
        want = torch.sigmoid(model(network_input(images)))[:, 0].numpy()
    err = float(np.abs(probs - want).max())
    print(f"{name}: {len(stems)} images, max |unetcu - smp| probability {err:.3g}")
    if not err < TOLERANCE:
        sys.exit(f"{name}: unetcu and smp disagree (max |diff| {err} >= {TOLERANCE})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--unetcu", default="build/unetcu")
    ap.add_argument("--work", default="", help="scratch folder (default: a temporary one)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    work = args.work or tempfile.mkdtemp(prefix="unetcu_interop_")
    here = os.path.dirname(os.path.abspath(__file__))
    data_dir = os.path.join(work, "data")
    run([args.unetcu, "synth", data_dir, "--count", "24", "--seed", "5"])

    # 1. unetcu -> smp.
    run([args.unetcu, "train", data_dir, "--epochs", "1", "--batch-size", "8", "--image-size", "64",
         "--device", "cpu", "--out", os.path.join(work, "run")])
    best = os.path.join(work, "run", "best.safetensors")
    compare_predict(args.unetcu, best, data_dir, smp_model(safetensors.torch.load_file(best)), work,
                    "unetcu-trained weights in smp")

    # 2. smp -> unetcu, the encoder from torchvision.
    encoder = os.path.join(work, "resnet34.safetensors")
    run([sys.executable, os.path.join(here, "export_encoder_weights.py"), "--out", encoder, "--seed", "1"])
    model = smp.Unet("resnet34", encoder_weights=None, in_channels=3, classes=1)
    model.encoder.load_state_dict(safetensors.torch.load_file(encoder))  # smp drops fc.*
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = smp.losses.DiceLoss(mode="binary", from_logits=True)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, 64, 64, generator=g)
    y = (torch.rand(4, 1, 64, 64, generator=g) > 0.6).float()
    model.train()
    for _ in range(3):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    smp_file = os.path.join(work, "smp_state_dict.safetensors")
    safetensors.torch.save_file(model.state_dict(), smp_file)
    compare_predict(args.unetcu, smp_file, data_dir, model.eval(), work, "smp-trained weights in unetcu")

    # 3. --encoder-weights maps torchvision's keys onto smp's encoder exactly.
    run([args.unetcu, "train", data_dir, "--epochs", "1", "--batch-size", "8", "--image-size", "64",
         "--device", "cpu", "--lr", "0", "--encoder-weights", encoder, "--out", os.path.join(work, "run_enc")])
    got = safetensors.torch.load_file(os.path.join(work, "run_enc", "best.safetensors"))
    tv = safetensors.torch.load_file(encoder)
    convs = [k for k, v in tv.items() if v.dim() == 4]
    same = all(torch.equal(got["encoder." + k], tv[k]) for k in convs)
    print(f"--encoder-weights: {len(convs)} encoder convolutions equal torchvision's: {same}")
    if not same:
        sys.exit("--encoder-weights: the encoder does not hold torchvision's weights")
    print("all interoperability checks passed")


if __name__ == "__main__":
    main()
