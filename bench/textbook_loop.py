"""netspec train vs the textbook loop, side by side in one process.

The textbook loop is what d2l and the PyTorch tutorials teach: a hand-written
nn.Sequential, torchvision's MNIST with ToTensor + Normalize, and a DataLoader with
2 workers. netspec trains the same model (specs/lenet.yaml, same init, optimizer,
batch size) on the same data. Both figures are end-to-end training throughput of
one epoch: batching, data movement and the steps, not the test pass.

    python -m bench.textbook_loop [--data-root ../shared/data] [--batch-size 256] [--repeats 3]
    python -m bench.textbook_loop --step [--compiled]   # train step only, same in-memory tensors
    python -m bench.textbook_loop --step --model d2l_googlenet --batch-size 32   # d2l's GoogLeNet, DenseNet, ...
    python -m bench.textbook_loop --step --model vit_b_16 --batch-size 4     # torchvision's own module
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


def textbook_lenet() -> nn.Module:
    """d2l's LeNet, hand-written (the same definition the parity tests use)."""
    return textbook_model("lenet")


def textbook_model(name: str) -> nn.Module:
    """The hand-written model that specs/<name>.yaml reproduces (the parity tests' reference): the book's code,
    or torchvision's own module for the torchvision specs (vit_b_16, convnext_tiny, swin_t, resnet50, ...)."""
    from tests.reference_models import REFERENCES

    if name in REFERENCES:
        return REFERENCES[name]()
    import torchvision

    return getattr(torchvision.models, name)(weights=None)


def textbook_epoch(data_root: str, batch_size: int, workers: int = 2, max_batches: int | None = None) -> float:
    """Examples/sec of one epoch of the DataLoader + ToTensor loop (d2l's train_ch6 inner loop)."""
    from torchvision import datasets, transforms

    torch.manual_seed(0)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    dataset = datasets.MNIST(data_root, train=True, download=False, transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)
    net = textbook_lenet()
    for m in net.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.9)
    loss_fn = nn.CrossEntropyLoss()
    seen = 0
    start = time.perf_counter()
    for i, (x, y) in enumerate(loader):
        optimizer.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        optimizer.step()
        seen += len(y)
        if max_batches is not None and i + 1 >= max_batches:
            break
    return seen / (time.perf_counter() - start)


def netspec_epoch(data_root: str, batch_size: int, out: Path) -> float:
    """Examples/sec that `netspec train specs/lenet.yaml --dataset mnist` reports for one epoch."""
    from netspec.train import train

    result = train(
        ROOT / "specs" / "lenet.yaml",
        {"dataset": "mnist", "data_root": data_root, "epochs": 1, "batch_size": batch_size, "device": "cpu"},
        out=out,
        report=lambda line: None,
        progress=False,
    )
    return result.last.examples_per_sec


def step_rates(
    batch_size: int = 256, steps: int = 20, repeats: int = 15, compiled: bool = False, model: str = "lenet"
) -> dict:
    """Train-step examples/sec on the same in-memory tensors: the hand-written model vs specs/<model>.yaml.

    The two models are timed in alternation, repeat by repeat, so machine drift hits both.
    """
    import statistics

    from netspec.bench import Variant, prepare_step
    from netspec.spec import load_spec

    spec = load_spec(ROOT / "specs" / f"{model}.yaml")
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    net = textbook_model(model).train()
    x, y = torch.randn(batch_size, *spec.input), torch.randint(0, 10, (batch_size,))
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def handwritten() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        optimizer.step()

    ours, compile_s = prepare_step(spec, cpu, "train", batch_size, Variant(compile=compiled))
    rates: dict[str, list[float]] = {"handwritten": [], "netspec": []}
    for fn in (handwritten, ours):  # warm-up
        for _ in range(5):
            fn()
    pairs = [("handwritten", handwritten), ("netspec", ours)]
    for r in range(repeats):
        for name, fn in pairs if r % 2 == 0 else pairs[::-1]:  # alternate who goes first
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            rates[name].append(batch_size * steps / (time.perf_counter() - start))
    hand, mine = statistics.median(rates["handwritten"]), statistics.median(rates["netspec"])
    return {
        "model": model,
        "batch_size": batch_size,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "handwritten_examples_per_sec": round(hand, 1),
        "netspec_examples_per_sec": round(mine, 1),
        "ratio": round(mine / hand, 3),
        "compiled": compiled,
        "compile_s": compile_s,
    }


def compare(data_root: str, batch_size: int = 256, repeats: int = 1, out: Path | None = None) -> dict:
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):  # interleaved, so drift on the machine hits both alike
            rows.append((textbook_epoch(data_root, batch_size), netspec_epoch(data_root, batch_size, Path(tmp))))
    textbook = sorted(r[0] for r in rows)[len(rows) // 2]
    ours = sorted(r[1] for r in rows)[len(rows) // 2]
    return {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "batch_size": batch_size,
        "textbook_examples_per_sec": round(textbook, 1),
        "netspec_examples_per_sec": round(ours, 1),
        "ratio": round(ours / textbook, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--step", action="store_true", help="compare train steps on in-memory tensors instead")
    parser.add_argument("--compiled", action="store_true", help="with --step: netspec through torch.compile")
    parser.add_argument("--model", default="lenet", help="with --step: a zoo spec with a hand-written reference")
    parser.add_argument("--steps", type=int, default=20, help="with --step: steps per timed repeat")
    parser.add_argument("--step-repeats", type=int, default=15, help="with --step: alternating timed repeats")
    args = parser.parse_args()
    if args.step:
        result = step_rates(args.batch_size, args.steps, args.step_repeats, compiled=args.compiled, model=args.model)
        print(json.dumps(result, indent=2))
        print(f"netspec {'compiled' if args.compiled else 'eager'} / hand-written eager: {result['ratio']:.3f}x")
        return
    result = compare(args.data_root, args.batch_size, args.repeats)
    print(json.dumps(result, indent=2))
    print(
        f"netspec train: {result['netspec_examples_per_sec']:,.0f} examples/sec, textbook DataLoader loop: "
        f"{result['textbook_examples_per_sec']:,.0f} examples/sec -> {result['ratio']:.2f}x"
    )


if __name__ == "__main__":
    main()
