"""An estimate (no GPU measured) of a trial's CUDA memory at 28, 64 and 80 px, for choosing
--gpus-per-trial: parameters x 4 (weights, gradients, two Adam/RMSprop moments) plus every layer's
output for one batch (what autograd keeps for the backward pass), fp32.

    python -m benchmarks.memory_estimate
"""

from __future__ import annotations

import torch
from torch import nn

from gantune.trainables.classifiers import ClassifierConfig, SmallCNN
from gantune.trainables.gans.nets import DCGANDiscriminator, DCGANGenerator

MB = 2**20
SIZES = (28, 64, 80)
NETS = {
    "demo": {"latent": 64, "gan_width": 32, "clf_width": 0.125, "batch": 64},
    "paper": {"latent": 100, "gan_width": 64, "clf_width": 1.0, "batch": 64},
}
"""spaces/demo.yaml's networks, and the papers' full widths (GANConfig / ClassifierConfig defaults)."""


def activation_bytes(model: nn.Module, x: torch.Tensor, reduce=sum) -> int:
    """Bytes of every leaf module's output for input x (fp32), reduced: their sum is a proxy for
    the activations kept for backward, their max for the peak of a no_grad pass."""
    sizes = []

    def hook(module, inputs, output):
        sizes.append(output.numel() * output.element_size())

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return reduce(sizes)


def state_bytes(model: nn.Module) -> int:
    return 4 * sum(p.numel() * p.element_size() for p in model.parameters())


def estimate(size: int, latent: int, gan_width: int, clf_width: float, batch: int) -> dict[str, float]:
    g, d = DCGANGenerator(latent, 1, size, gan_width), DCGANDiscriminator(1, size, gan_width)
    clf = SmallCNN(1, 2, size, ClassifierConfig(width=clf_width).width)
    z, x = torch.randn(batch, latent), torch.randn(batch, 1, size, size)
    # A DCGAN step holds G's graph and D's graph on real and on fake images at once.
    gan = state_bytes(g) + state_bytes(d) + activation_bytes(g, z) + 2 * activation_bytes(d, x)
    classifier = state_bytes(clf) + activation_bytes(clf, x)
    # predict_proba scores 512 images per no_grad batch: a layer's input and output coexist.
    evaluation = state_bytes(clf) / 4 + 2 * activation_bytes(clf, torch.randn(512, 1, size, size), max)
    return {
        "gan_params_M": (sum(p.numel() for p in g.parameters()) + sum(p.numel() for p in d.parameters())) / 1e6,
        "gan_step_MB": gan / MB,
        "clf_params_M": sum(p.numel() for p in clf.parameters()) / 1e6,
        "clf_step_MB": classifier / MB,
        "clf_eval_MB": evaluation / MB,
    }


def main() -> None:
    print("name   px  GAN params(M)  GAN step(MB)  CNN params(M)  CNN step(MB)  CNN eval(MB)")
    for name, nets in NETS.items():
        for size in SIZES:
            e = estimate(size, **nets)
            print(f"{name:6} {size:3} {e['gan_params_M']:13.2f} {e['gan_step_MB']:13.1f} "
                  f"{e['clf_params_M']:14.2f} {e['clf_step_MB']:13.1f} {e['clf_eval_MB']:13.1f}")


if __name__ == "__main__":
    main()
