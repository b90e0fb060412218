"""Plain PyTorch source for a shaped network, written as a person would write it (torchvision style).

- The spec becomes one class and every block one class, whose `__init__` takes the block's
  parameters and its input size (`in_channels` or `in_features`) and whose `forward` is written
  once; a block whose body is a plain chain is an `nn.Sequential` subclass and needs no forward.
- The module tree and attribute names are the compiler's (graph.py), so the file's state_dict keys
  are netspec's and a netspec checkpoint loads with strict=True.
- Inside a block class, sizes are expressions of its parameters where the spec writes them so
  (`$out * 4` becomes `out * 4`) and of its input size where they are inferred; each expression is
  checked against every use of the block. A size that no expression explains is a constructor argument.
- Merges are the tensor expressions they are (`torch.cat([self.branch1(x), self.branch2(x)], dim=1)`),
  named taps local variables, learned tensors `nn.Parameter`s of their module.

The package, in the order the work is done: symbolic.py (sizes known by expressions), plan.py (which
classes, serving which uses), writer.py (the classes' code).
"""

from netspec.codegen.plan import class_name
from netspec.codegen.writer import write_classes

__all__ = ["class_name", "write_classes"]
