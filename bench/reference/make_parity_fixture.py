"""bench/reference/make_parity_fixture.py: the PyTorch + segmentation_models_pytorch side of
unetcu's parity tests.

It runs the recipe's training step in smp's own Unet(resnet34) and records what unetcu must
reproduce, into a compact safetensors fixture (tests/fixtures/parity/parity.safetensors):

  1. `unetcu init --seed S` writes the initial weights; they load into smp with
     load_state_dict(strict=True) (so a unetcu checkpoint is an smp state_dict).
  2. `unetcu synth` makes 4 HAM10000-like images; `unetcu predict --save-inputs` writes the
     uint8 batch exactly as unetcu resizes it, at 64x64 and at 128x128. The fixture stores
     those bytes, so the C++ tests feed exactly what PyTorch saw.
  3. For each size, in train mode, float32 on one CPU thread with deterministic algorithms:
     the logits and Dice loss of the first step, all 140 parameter gradients (norm, sum and 16
     sampled elements per tensor), the BatchNorm running statistics after that step, the
     losses of 3 Adam steps (lr 1e-4) and the final parameters (as the update final - initial:
     norm, sum, samples).
  4. Interoperability the other way: a state_dict saved with safetensors.torch.save_file, whose
     BatchNorm parameters, running statistics and head bias are those after the 3 Adam steps at
     64x64 (the conv weights stay the initial ones, which the C++ test rebuilds from the seed, so
     the fixture stays small). The fixture keeps that file's header bytes and its non-conv
     tensors, so the test rebuilds Python's file byte for byte, and smp's eval-mode logits for
     it. The script also runs `unetcu predict --probs` on that file and checks the probabilities
     against smp's, so a state_dict written by PyTorch is proven to load with --weights.

Usage (from the repository root, after building):
  python bench/reference/make_parity_fixture.py --unetcu build/unetcu
"""

import argparse
import json
import os
import platform
import struct
import subprocess
import sys
import tempfile

import numpy as np
import safetensors
import safetensors.torch
import segmentation_models_pytorch as smp
import torch

SCRIPT_VERSION = "1"
FIXTURE_FORMAT = "unetcu-parity-1"
N_IMAGES = 4
SIZES = (64, 128)
N_SAMPLES = 16
ADAM_STEPS = 3
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def run(cmd):
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)


def make_model(init_path):
    model = smp.Unet("resnet34", encoder_weights=None, in_channels=3, classes=1)
    # strict=True: every key present, none extra, every shape equal.
    model.load_state_dict(safetensors.torch.load_file(init_path), strict=True)
    return model.float()


def network_input(images_u8):
    """uint8 NHWC -> the normalised float32 NCHW batch (/255, then ImageNet mean/std)."""
    x = torch.from_numpy(images_u8).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean) / std


def read_batch(unetcu, weights, data_dir, size, work):
    out = os.path.join(work, f"inputs{size}")
    run([unetcu, "predict", "--weights", weights, "--image-size", str(size), "--device", "cpu",
         "--save-inputs", "--out", out, data_dir])
    stems = sorted(f[: -len("_input.npy")] for f in os.listdir(out) if f.endswith("_input.npy"))
    assert len(stems) == N_IMAGES, stems
    images = np.stack([np.load(os.path.join(out, s + "_input.npy")) for s in stems])
    masks = np.stack([np.load(os.path.join(out, s + "_target.npy")) for s in stems])
    assert images.dtype == np.uint8 and images.shape == (N_IMAGES, size, size, 3)
    assert masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, 1}
    return images, masks


def sample_indices(model):
    """N_SAMPLES flat (PyTorch-layout) indices per parameter, fixed by a seeded generator."""
    g = torch.Generator().manual_seed(1234)
    rows = []
    for _, p in model.named_parameters():
        rows.append(torch.randint(0, p.numel(), (N_SAMPLES,), generator=g))
    return torch.stack(rows).to(torch.int64)


def stats(tensors, index):
    """Per tensor: L2 norm and sum (float64), and the sampled elements (float32)."""
    norms = torch.tensor([t.double().norm().item() for t in tensors], dtype=torch.float64)
    sums = torch.tensor([t.double().sum().item() for t in tensors], dtype=torch.float64)
    samples = torch.stack([t.reshape(-1)[i] for t, i in zip(tensors, index)]).float()
    return norms, sums, samples


def running_stats(model):
    parts = []
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            parts += [m.running_mean, m.running_var]
    return torch.cat(parts).detach().clone()


def train_record(init_path, images, masks, index, prefix):
    model = make_model(init_path)
    model.train()
    loss_fn = smp.losses.DiceLoss(mode="binary", from_logits=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = network_input(images)
    y = torch.from_numpy(masks).unsqueeze(1).float()
    init = [p.detach().clone() for p in model.parameters()]
    out = {}
    losses = []
    for step in range(ADAM_STEPS):
        opt.zero_grad()
        logits = model(x)
        loss = loss_fn(logits, y)
        loss.backward()
        losses.append(loss.item())
        if step == 0:
            out[prefix + "logits"] = logits.detach().clone()
            grads = [p.grad.detach() for p in model.parameters()]
            out[prefix + "grad.norm"], out[prefix + "grad.sum"], out[prefix + "grad.samples"] = \
                stats(grads, index)
            out[prefix + "running"] = running_stats(model)
        opt.step()
    out[prefix + "losses"] = torch.tensor(losses, dtype=torch.float32)
    updates = [p.detach().double() - p0.double() for p, p0 in zip(model.parameters(), init)]
    out[prefix + "update.norm"], out[prefix + "update.sum"], out[prefix + "update.samples"] = \
        stats(updates, index)
    out[prefix + "images"] = torch.from_numpy(images)
    out[prefix + "masks"] = torch.from_numpy(masks)
    print(f"{prefix} losses {losses}", file=sys.stderr)
    return out, model


def interop_record(unetcu, init_path, trained, images, work):
    """A PyTorch-written state_dict with non-initial BatchNorm state, and smp's logits for it."""
    state = safetensors.torch.load_file(init_path)
    trained_state = trained.state_dict()
    for k in state:
        if not (k.endswith(".weight") and state[k].dim() == 4):
            state[k] = trained_state[k].detach().clone()
    path = os.path.join(work, "interop.safetensors")
    safetensors.torch.save_file(state, path)
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = f.read(header_len)
    model = make_model(path)
    model.eval()
    with torch.no_grad():
        logits = model(network_input(images))

    # The same file through `unetcu predict --weights`: its probabilities equal smp's.
    out = os.path.join(work, "interop_predict")
    run([unetcu, "predict", "--weights", path, "--image-size", "64", "--device", "cpu",
         "--probs", "--out", out, os.path.join(work, "data")])
    stems = sorted(f[: -len("_probs.npy")] for f in os.listdir(out) if f.endswith("_probs.npy"))
    probs = np.stack([np.load(os.path.join(out, s + "_probs.npy")) for s in stems])
    want = torch.sigmoid(logits)[:, 0].numpy()
    err = np.abs(probs - want).max()
    print(f"interop: unetcu predict vs smp eval probabilities, max |diff| {err:.3g}", file=sys.stderr)
    assert err < 1e-4, f"unetcu predict disagrees with smp on a PyTorch-written state_dict: {err}"

    rec = {
        "interop.header": torch.frombuffer(bytearray(header), dtype=torch.uint8),
        "interop.file_size": torch.tensor(os.path.getsize(path), dtype=torch.int64),
        "interop.logits": logits.clone(),
    }
    for k, v in state.items():
        if not (k.endswith(".weight") and v.dim() == 4):
            rec["interop/" + k] = v.clone()
    return rec


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--unetcu", default="build/unetcu", help="the unetcu binary")
    ap.add_argument("--out", default="tests/fixtures/parity/parity.safetensors")
    ap.add_argument("--seed", type=int, default=7, help="unetcu init seed")
    ap.add_argument("--synth-seed", type=int, default=3, help="unetcu synth seed")
    ap.add_argument("--work", default="", help="scratch folder (default: a temporary one)")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)

    work = args.work or tempfile.mkdtemp(prefix="unetcu_parity_")
    os.makedirs(work, exist_ok=True)
    init_path = os.path.join(work, "init.safetensors")
    data_dir = os.path.join(work, "data")
    run([args.unetcu, "init", "--seed", str(args.seed), "--out", init_path])
    run([args.unetcu, "synth", data_dir, "--count", str(N_IMAGES), "--seed", str(args.synth_seed)])

    names = [n for n, _ in make_model(init_path).named_parameters()]
    index = sample_indices(make_model(init_path))
    fixture = {"sample_index": index}
    trained64, images64 = None, None
    for size in SIZES:
        images, masks = read_batch(args.unetcu, init_path, data_dir, size, work)
        rec, model = train_record(init_path, images, masks, index, f"s{size}.")
        fixture.update(rec)
        if size == 64:
            trained64, images64 = model, images
    fixture.update(interop_record(args.unetcu, init_path, trained64, images64, work))

    metadata = {
        "format": FIXTURE_FORMAT,
        "script": "bench/reference/make_parity_fixture.py",
        "script_version": SCRIPT_VERSION,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "segmentation_models_pytorch": smp.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
        "init_seed": str(args.seed),
        "synth_seed": str(args.synth_seed),
        "n_images": str(N_IMAGES),
        "sizes": json.dumps(list(SIZES)),
        "adam_steps": str(ADAM_STEPS),
        "lr": "1e-4",
        "param_names": json.dumps(names),
    }
    fixture = {k: v.contiguous() for k, v in fixture.items()}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    safetensors.torch.save_file(fixture, args.out, metadata=metadata)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
