"""Stage 5: inferred shapes -> a torch `nn.Module`, structured as a person would write it.

The spec and every block use become a `Block`: a module whose attributes are named as in
graph.py (`conv1`, `bn1`, `body`, `shortcut`, `inception3`, ...), whose learned tensors
(`parameter` entries) are its own parameters, and whose `forward` runs a short program over
them: call a module, expand a learned tensor over the batch, combine branch outputs. A repeat
is an nn.Sequential of its copies, a branch that is a plain chain an nn.Sequential. The exported
Python file (exporter.py) writes the same tree as classes, so both share one set of
state_dict keys; parameters appear in reading order, a module's own tensors before its children's.

Checkpoints written before named attributes (state_dict keys such as "4.0.0.body.0.weight")
still load: their tensors are mapped onto today's keys by position, once, on load.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netspec.errors import CheckpointError
from netspec.fileio import load_checkpoint
from netspec.graph import Form, Graph
from netspec.layers import MergeSpec, format_shape
from netspec.shapes import LayerInfo, NetShape, ShapedMerge, ShapedNode, ShapedSeq, infer_shapes
from netspec.spec import Spec

# Program steps: (op, target, inputs, output, slots to free afterwards, summary row or -1).
CALL, TENSOR, MERGE = 0, 1, 2


class Block(nn.Module):
    """A module of the compiled network (the spec itself, a block use, a repeat copy): named children,
    learned tensors of its own, and the program that wires them.

    Each program step is `(op, target, inputs, output, free, row)` over a list of values whose slot 0 is
    the block's input: CALL runs the child module `target`, TENSOR expands the learned tensor `target` over
    the batch (`inputs` is its per-example shape), MERGE combines the values `inputs` with the function
    `target`. Values no later step reads are dropped as soon as possible. `row` is the summary row the step
    computes, for `trace_shapes`.
    """

    trace: dict[int, tuple[int, ...]] | None = None  # set by trace_shapes: row -> output shape

    def __init__(
        self,
        name: str,
        modules: dict[str, nn.Module],
        tensors: dict[str, torch.Tensor],
        program: tuple[tuple[Any, ...], ...],
        result: int,
        slots: int,
    ) -> None:
        super().__init__()
        for attr, tensor in tensors.items():  # a module's own tensors come before its children's
            self.register_parameter(attr, nn.Parameter(tensor))
        for attr, module in modules.items():
            self.add_module(attr, module)
        self.name = name
        self.program = program
        self.result = result
        self.slots = slots

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: list[Any] = [x] + [None] * self.slots
        for op, target, inputs, output, free, row in self.program:
            if op == CALL:
                values[output] = self._modules[target](values[inputs[0]])
            elif op == TENSOR:
                # (a view first: a tensor may be stored in another shape than it is read, e.g. 64 as 64×1×1)
                values[output] = self._parameters[target].view(1, *inputs).expand(x.shape[0], *inputs)
            else:
                values[output] = target([values[i] for i in inputs])
            if self.trace is not None and row >= 0:
                self.trace[row] = tuple(values[output].shape[1:])
            for i in free:
                values[i] = None
        return values[self.result]

    def extra_repr(self) -> str:
        return self.name


@dataclass
class _ScopeBuilder:
    """Collects one Block's attributes and writes its program."""

    modules: dict[str, nn.Module]
    tensors: dict[str, torch.Tensor]
    program: list[list[Any]]
    slots: int = 0

    def slot(self) -> int:
        self.slots += 1
        return self.slots

    def seq(self, seq: ShapedSeq, value: int) -> int:
        """Emit a sequence read from slot `value`; returns the slot of its output."""
        values = [value]
        for child, source in zip(seq.children, seq.sources, strict=True):
            inputs = [values[-1]] if source is None else [values[j] for j in source]
            values.append(self.node(child, inputs))
        return values[-1]

    def node(self, node: ShapedNode, inputs: list[int]) -> int:
        if isinstance(node, ShapedMerge):
            return self.merge(node, inputs)
        if isinstance(node, LayerInfo) and node.is_tensor:
            assert node.attr is not None
            self.tensors[node.attr] = node.layer.make_tensor(node.input_shape)  # type: ignore[union-attr]
            return self.emit(TENSOR, node.attr, tuple(node.output_shape), node.index)
        assert node.attr is not None, node
        self.modules[node.attr] = module_of(node)
        return self.emit(CALL, node.attr, (inputs[0],))

    def merge(self, node: ShapedMerge, inputs: list[int]) -> int:
        outs = []
        for b, branch in enumerate(node.branches):
            value = inputs[b] if len(inputs) > 1 else inputs[0]
            if branch.form == Form.EMPTY:
                outs.append(value)
            elif branch.form == Form.SINGLE:
                outs.append(self.node(branch.children[0], [value]))
            elif branch.form == Form.SEQUENTIAL:
                assert branch.attr is not None
                self.modules[branch.attr] = module_of(branch)
                outs.append(self.emit(CALL, branch.attr, (value,)))
            else:
                assert branch.form == Form.FLAT
                outs.append(self.seq(branch, value))
        assert isinstance(node.info.layer, MergeSpec)
        return self.emit(MERGE, node.info.layer.build(), tuple(outs), node.info.index)

    def emit(self, op: int, target: Any, inputs: tuple[int, ...], row: int = -1) -> int:
        output = self.slot()
        self.program.append([op, target, inputs, output, (), row])
        return output

    def finish(self, result: int) -> tuple[tuple[Any, ...], ...]:
        """The program with each value dropped after the last step that reads it."""
        last: dict[int, int] = {}
        for k, (op, _, inputs, *_) in enumerate(self.program):
            if op != TENSOR:
                for i in inputs:
                    last[i] = k
        for k, step in enumerate(self.program):
            step[4] = tuple(sorted(i for i, at in last.items() if at == k and i != result))
        return tuple(tuple(step) for step in self.program)


def _scope_parts(seq: ShapedSeq) -> tuple[Any, ...]:
    """Block's arguments after its name, for a scope sequence."""
    builder = _ScopeBuilder({}, {}, [])
    result = builder.seq(seq, 0)
    return builder.modules, builder.tensors, builder.finish(result), result, builder.slots


def scope_module(seq: ShapedSeq, name: str) -> Block:
    """The Block of a scope sequence: a block use, or a repeat copy that is more than a chain."""
    return Block(name, *_scope_parts(seq))


def module_of(node: ShapedNode) -> nn.Module:
    """The one module a layer, a block use, a repeat, a chain-branch or a repeat copy becomes."""
    if isinstance(node, LayerInfo):
        return node.layer.build(node.input_shape)  # type: ignore[call-arg]
    assert isinstance(node, ShapedSeq), node
    if node.form == Form.REPEAT:
        return nn.Sequential(*(module_of(copy) for copy in node.children))
    if node.form == Form.SINGLE:
        return module_of(node.children[0])
    if node.form == Form.SEQUENTIAL:
        return nn.Sequential(*(module_of(child) for child in node.children))
    if node.form == Form.EMPTY:
        return nn.Identity()
    assert node.form == Form.SCOPE, node.form
    return scope_module(node, node.label or node.path)


class SpecNet(Block):
    """The compiled network; `.net_shape` holds the inferred shapes it was built from."""

    def __init__(self, net_shape: NetShape) -> None:
        super().__init__(net_shape.name, *_scope_parts(net_shape.root))
        self.net_shape = net_shape

    @property
    def spec(self) -> Spec:
        return self.net_shape.spec


def leaf_modules(model: SpecNet) -> list[tuple[LayerInfo, nn.Module | None]]:
    """Each row of the inferred network paired with its module, in reading order (None for merges and
    learned tensors, which are not modules)."""
    pairs: list[tuple[LayerInfo, nn.Module | None]] = []

    def in_scope(node: ShapedNode, scope: nn.Module) -> None:
        """A child of a scope (or of a flat branch), whose module is the scope's attribute."""
        if isinstance(node, ShapedMerge):
            pairs.append((node.info, None))
            for branch in node.branches:
                if branch.form == Form.SINGLE:
                    in_scope(branch.children[0], scope)
                elif branch.form == Form.SEQUENTIAL:
                    own(branch, getattr(scope, str(branch.attr)))
                elif branch.form == Form.FLAT:
                    for child in branch.children:
                        in_scope(child, scope)
        elif isinstance(node, LayerInfo) and node.is_tensor:
            pairs.append((node, None))
        else:
            own(node, getattr(scope, str(node.attr)))

    def own(node: ShapedNode, module: nn.Module) -> None:
        """A node whose module is `module` itself."""
        if isinstance(node, LayerInfo):
            pairs.append((node, module))
        elif isinstance(node, ShapedSeq) and node.form == Form.SINGLE:
            own(node.children[0], module)
        elif isinstance(node, ShapedSeq) and node.form in (Form.REPEAT, Form.SEQUENTIAL):
            for child, sub in zip(node.children, module.children(), strict=True):
                own(child, sub)
        elif isinstance(node, ShapedSeq):
            for child in node.children:
                in_scope(child, module)

    own(model.net_shape.root, model)
    return pairs


def trace_shapes(model: SpecNet, x: torch.Tensor) -> dict[int, tuple[int, ...]]:
    """Run `model` on `x` and record the real output shape (without the batch) of every summary row: layers
    through forward hooks, merges and learned tensors through the blocks' programs."""
    seen: dict[int, tuple[int, ...]] = {}
    handles = [
        module.register_forward_hook(lambda m, i, o, row=info.index: seen.__setitem__(row, tuple(o.shape[1:])))
        for info, module in leaf_modules(model)
        if module is not None
    ]
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    for block in blocks:
        block.trace = seen
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        for block in blocks:
            block.trace = None
    return seen


def build(
    spec: Spec | Graph | NetShape | str | Path | dict[str, Any], *, compile: bool = False, **compile_kwargs: object
) -> nn.Module:
    """Compile a spec (a Spec, a path, YAML text or a dict) into a torch module.

    With `compile=True` the module is wrapped by `torch.compile(**compile_kwargs)`;
    the original stays reachable as `._orig_mod`.
    """
    net_shape = spec if isinstance(spec, NetShape) else infer_shapes(spec)
    check_memory(net_shape)
    model: nn.Module = SpecNet(net_shape)
    if compile:
        model = torch.compile(model, **compile_kwargs)  # type: ignore[assignment]
    return model


def available_memory() -> int | None:
    """Bytes of memory this machine can still give (Linux's MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n < 1024 or unit == "EiB":
            break
        n /= 1024  # type: ignore[assignment]
    return f"{n:,.1f} {unit}" if n < 10**6 else f"{n:.1e} {unit}"


def check_memory(net: NetShape, available: int | None = None) -> None:
    """Refuse, before any allocation, a network whose float32 parameters alone exceed the memory this machine
    has available (a width of 1e9 typed for 1e3), or one example's largest tensor does: a located SpecError
    naming the layer."""
    total = net.total_params * 4
    one = max(math.prod(s) for s in (net.input_shape, *(i.output_shape for i in net.layers))) * 4  # one example's
    available = available_memory() if available is None else available
    too_big_for_torch = any(d >= 2**63 for info in net.layers for d in info.output_shape) or total >= 2**63
    if not too_big_for_torch and (available is None or max(total, one) <= available):
        return
    room = f"more than the {_bytes(available)} of memory available" if available is not None else "too large"
    largest = max(net.layers, key=lambda info: info.params)
    widest = max(net.layers, key=lambda info: math.prod(info.output_shape))
    if one > total and math.prod(net.input_shape) * 4 == one:  # the input alone is too large
        raise net.spec.source.error(
            f"one example of the input {'×'.join(map(str, net.input_shape))} would take {_bytes(one)} as float32, "
            f"{room}; refused before allocating any: check the input shape",
            ("input",),
        )
    if one > total:  # the network is small but its tensors are not
        raise net.spec.source.error(
            f"one example's output of {widest.path} {widest.kind} ({'×'.join(map(str, widest.output_shape))}) "
            f"would take {_bytes(one)} as float32, {room}; refused before allocating any: check the input shape "
            "and the sizes",
            widest.yaml_path,
            f"{widest.path} {widest.kind}",
        )
    raise net.spec.source.error(
        f"the network would have {net.total_params:,} parameters ({_bytes(total)} as float32), {room}; "
        f"refused before allocating any; the largest layer is {largest.path} {largest.kind} with {largest.params:,} (output "
        f"{'×'.join(map(str, largest.output_shape))}): check its widths",
        largest.yaml_path,
        f"{largest.path} {largest.kind}",
    )


def transfer_state_dict(source: Mapping[str, torch.Tensor], model: nn.Module) -> int:
    """Load a state_dict from a differently-named model whose tensors are in the same order.

    This is how weights of a hand-written model (a textbook's, torchvision's) load into its spec: same
    tensor shapes in the same order, whatever the module names. Where a model registers a module's
    tensors in another order than they run (torchvision's Swin PatchMerging creates `reduction` before
    `norm`), the tensors are matched by position within each shape instead: the k-th tensor of a shape in
    the source goes to the k-th tensor of that shape in the model. Returns how many tensors that moved.
    """
    target = model.state_dict()
    if len(source) != len(target):
        raise CheckpointError(
            f"the source has {len(source)} tensors but the model has {len(target)}: "
            f"{unmatched_tensors(source, target, 'the source', 'the model')}"
        )
    pairs = list(zip(source.items(), target.items(), strict=True))
    moved = 0
    if any(tensor.shape != expected.shape for (_, tensor), (_, expected) in pairs):
        pairs, moved = _match_within_shapes(source, target)
    model.load_state_dict({key: tensor for (_, tensor), (key, _) in pairs})
    return moved


def unmatched_tensors(
    source: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    source_name: str,
    target_name: str,
    shown: int = 4,
) -> str:
    """Which tensors of two differently-named state_dicts have no counterpart in the other, found by aligning
    their shapes in order (the longest common run of shapes, as a diff aligns lines): "12 of the model's tensors have
    no counterpart in the source: blocks.0.ls1.gamma (192), ..."."""
    source_keys, target_keys = list(source), list(target)
    matcher = difflib.SequenceMatcher(
        a=[tuple(t.shape) for t in source.values()], b=[tuple(t.shape) for t in target.values()], autojunk=False
    )
    extra: list[str] = []
    missing: list[str] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag in ("delete", "replace"):
            extra += [f"{k} ({format_shape(tuple(source[k].shape))})" for k in source_keys[i1:i2]]
        if tag in ("insert", "replace"):
            missing += [f"{k} ({format_shape(tuple(target[k].shape))})" for k in target_keys[j1:j2]]

    def listing(names: list[str]) -> str:
        return ", ".join(names[:shown]) + (f", ... ({len(names) - shown} more)" if len(names) > shown else "")

    def lacking(names: list[str], side: str, other: str) -> str:
        verb = "has" if len(names) == 1 else "have"
        return f"{len(names)} of {side}'s tensors {verb} no counterpart in {other}: {listing(names)}"

    parts = [lacking(missing, target_name, source_name)] if missing else []
    parts += [lacking(extra, source_name, target_name)] if extra else []
    return "; ".join(parts)


def _match_within_shapes(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> tuple[list[tuple[tuple[str, torch.Tensor], tuple[str, torch.Tensor]]], int]:
    """Pair the k-th source tensor of each shape with the k-th model tensor of that shape."""
    by_shape: dict[tuple[int, ...], list[tuple[str, torch.Tensor]]] = {}
    for item in source.items():
        by_shape.setdefault(tuple(item[1].shape), []).append(item)
    pairs = []
    for position, (key, expected) in enumerate(target.items()):
        candidates = by_shape.get(tuple(expected.shape))
        if not candidates:
            src_key, tensor = list(source.items())[position]
            raise CheckpointError(
                f"tensor {src_key} has shape {tuple(tensor.shape)} but {key} needs {tuple(expected.shape)}, "
                "and no other tensor of the source takes its place"
            )
        pairs.append((candidates.pop(0), (key, expected)))
    source_keys = list(source)
    moved = sum(source_keys.index(src[0]) != position for position, (src, _) in enumerate(pairs))
    return pairs, moved


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """Load a netspec state_dict into `model`: by name, or by position for a checkpoint written before compiled
    modules had named attributes; a mismatch says which tensors do not fit, with their shapes."""
    target = model.state_dict()
    if set(state) != set(target) and _positional_keys(state):
        try:
            transfer_state_dict(state, model)
            return
        except CheckpointError as exc:
            raise CheckpointError(f"{where}: does not fit {_what(model)}: {exc}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise CheckpointError(f"{where}: does not fit {_what(model)}: {_state_mismatch(state, target)}") from None


def _positional_keys(state: Mapping[str, torch.Tensor]) -> bool:
    """True for the keys of netspec 0.1 checkpoints, whose modules were nn.Sequential positions ("0.weight")."""
    return all(key.split(".", 1)[0].isdigit() for key in state)


def _what(model: nn.Module) -> str:
    spec = getattr(model, "spec", None)
    return f"spec {spec.name}" if spec is not None else "the model"


def _state_mismatch(state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], shown: int = 3) -> str:
    """Which tensors differ between a checkpoint and a model: shapes that differ, keys missing, keys extra."""
    problems = [
        f"{k} is {tuple(state[k].shape)} in the checkpoint but {tuple(target[k].shape)} in the model"
        for k in target
        if k in state and state[k].shape != target[k].shape
    ]
    missing = [k for k in target if k not in state]
    extra = [k for k in state if k not in target]
    if missing:
        problems.append(f"{len(missing)} tensor(s) missing from the checkpoint ({', '.join(missing[:shown])})")
    if extra:
        problems.append(f"{len(extra)} tensor(s) the model does not have ({', '.join(extra[:shown])})")
    more = f"; and {len(problems) - shown} more" if len(problems) > shown else ""
    return "; ".join(problems[:shown]) + more


def load_weights(model: nn.Module, checkpoint: str | Path) -> None:
    """Load the model weights of a netspec checkpoint (a run's last.pt or best.pt) into `model`."""
    ckpt = load_checkpoint(checkpoint)
    if "model" not in ckpt:
        raise CheckpointError(f"{checkpoint}: holds no model weights")
    load_state(model, ckpt["model"], str(checkpoint))
