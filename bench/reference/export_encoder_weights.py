"""bench/reference/export_encoder_weights.py: a torchvision ResNet-34 state_dict as safetensors,
for `unetcu train --encoder-weights FILE`.

unetcu downloads nothing. A user with the ImageNet weights file (torchvision's
resnet34-333f7ec4.pth, or any ResNet-34 state_dict saved with torch.save) converts it with

  python bench/reference/export_encoder_weights.py --from resnet34-333f7ec4.pth --out resnet34.safetensors

and, on a machine that may download, torchvision can fetch them first:

  python bench/reference/export_encoder_weights.py --torchvision-weights IMAGENET1K_V1 --out resnet34.safetensors

Without either, the file holds torchvision's own random initialisation (seeded), which is what
the interoperability check uses. The state_dict is loaded into torchvision's resnet34 with
strict=True first, so a file that is not a ResNet-34 fails here, not later. The keys are
torchvision's (conv1.weight, bn1.*, layer1.0.conv1.weight, ..., fc.*); unetcu maps them to smp's
"encoder." keys and ignores fc.*, exactly as smp's ResNetEncoder.load_state_dict does.
"""

import argparse
import sys

import safetensors.torch
import torch
import torchvision


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output .safetensors file")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--from", dest="src", default="", help="a ResNet-34 state_dict saved with torch.save")
    src.add_argument("--torchvision-weights", default="", help="torchvision weights name, e.g. IMAGENET1K_V1")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random initialisation (no --from)")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    if args.torchvision_weights:
        model = torchvision.models.resnet34(weights=args.torchvision_weights)
    else:
        model = torchvision.models.resnet34(weights=None)
        if args.src:
            state = torch.load(args.src, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
            model.load_state_dict(state, strict=True)
    state = {k: v.detach().float().contiguous() if v.is_floating_point() else v.contiguous()
             for k, v in model.state_dict().items()}
    safetensors.torch.save_file(state, args.out, metadata={"source": args.src or args.torchvision_weights
                                                           or f"torchvision resnet34 init, seed {args.seed}"})
    print(f"wrote {args.out}: {len(state)} tensors", file=sys.stderr)


if __name__ == "__main__":
    main()
