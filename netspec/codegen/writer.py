"""Emitting the code: `FileWriter` writes the file's classes in the order planned, `ClassWriter` the
`__init__` and `forward` of one class, resolving each size against every use of the class."""

from __future__ import annotations

import inspect
import keyword
import re
from typing import Any

from torch import nn

from netspec.codegen.plan import ClassPlan, Replan, class_name, plan_classes, repeat_of
from netspec.codegen.symbolic import (
    NotSymbolic,
    Sizes,
    Sym,
    explains,
    has_sym,
    py_literal,
    render,
    same_value,
    substitute_names,
    written_expr,
)
from netspec.graph import Form, Role
from netspec.layers import LayerSpec, MergeSpec, ModuleCall, argument_names, format_shape
from netspec.shapes import LayerInfo, NetShape, ShapedMerge, ShapedNode, ShapedSeq

INDENT = "    "


MAX_LINE = 110


class FileWriter:
    """Writes the whole file: the planned classes in dependency order, then the network's class."""

    def __init__(self, net: NetShape, strict: set[tuple[str, str]] | None = None) -> None:
        self.net = net
        # (block, "loops" or "optional"): blocks whose repeats are written copy by copy, or whose shortcut
        # variants are separate classes
        self.strict = strict or set()
        self.helpers: dict[type, str] = {}  # netspec-defined modules: their source goes into the file
        self.imports: dict[str, set[str]] = {}  # `from X import Y` lines (torchvision's modules)
        self.plans, self.order = plan_classes(net, self.strict)  # id(scope) -> its class; classes in writing order

    # -- module expressions --

    def module_class(self, cls: type[nn.Module]) -> str:
        """How the file names a module class: nn.X, an import from torchvision, or a helper class in the file."""
        if cls.__module__.startswith("torch.nn"):
            return f"nn.{cls.__name__}"
        if cls.__module__.startswith("torchvision"):
            self.imports.setdefault(cls.__module__, set()).add(cls.__name__)
            return cls.__name__
        name = cls.__name__.removesuffix("Module")
        if cls not in self.helpers:
            source = inspect.getsource(cls).replace(f"class {cls.__name__}(", f"class {name}(", 1)
            self.helpers[cls] = source
        return name

    def call(self, call: ModuleCall, slots: list[str] | None = None) -> str:
        """`nn.Conv2d(1, 6, 5, padding=2)`: required arguments by position, the rest by name, torch's defaults
        left out. `slots` replaces the rendering of each argument (in the order the signature lists them)."""
        cls = call.cls
        qualname = self.module_class(cls)
        signature = inspect.signature(cls.__init__)
        bound = signature.bind(None, *call.args, **call.kwargs).arguments
        parts, k = [], 0
        for p in list(signature.parameters.values())[1:]:
            if p.name not in bound:
                continue
            value = bound[p.name]
            text = slots[k] if slots is not None else render(value)
            k += 1
            if p.default is not inspect.Parameter.empty:
                if (
                    not has_sym(value)
                    and type(value) is type(p.default)
                    and value == p.default
                    and text == py_literal(value)
                ):
                    continue
                parts.append(f"{p.name}={text}")
            else:
                parts.append(text)
        return f"{qualname}({', '.join(parts)})"

    # -- one class --

    def write_class(self, plan: ClassPlan) -> list[str]:
        body = ClassWriter(self, plan)
        body.walk()
        signature = ["self"]
        for name in plan.size_args:
            signature.append(f"{name}: int")
        for name, _ in plan.extra_args:
            signature.append(f"{name}: int")
        required = [(k, v) for k, v in plan.params.items() if v is None]
        optional = [(k, v) for k, v in plan.params.items() if v is not None]
        hints = {k: type(plan.instances[0].block.args[k]).__name__ for k in plan.params} if plan.params else {}
        signature += [f"{k}: {hints[k]}" for k, _ in required]
        signature += [f"{k}: {hints[k]} = {py_literal(v)}" for k, v in optional]
        base = "nn.Sequential" if plan.chain else "nn.Module"
        lines = [f"class {plan.name}({base}):"]
        doc = self._docstring(plan)
        if doc:
            lines.append(f'{INDENT}"""{doc}"""')
            lines.append("")
        head = f"{INDENT}def __init__({', '.join(signature)}) -> None:"
        if len(head) <= MAX_LINE:
            lines.append(head)
        else:  # as ruff format wraps it
            lines += [f"{INDENT}def __init__(", f"{INDENT * 2}{', '.join(signature)}", f"{INDENT}) -> None:"]
        lines.append(f"{INDENT * 2}super().__init__()")
        lines += [INDENT * 2 + line for line in body.init]
        if not plan.chain:
            lines += ["", f"{INDENT}def forward(self, x: torch.Tensor) -> torch.Tensor:"]
            lines += [INDENT * 2 + line for line in body.forward]
        return lines

    def _docstring(self, plan: ClassPlan) -> str:
        seq = plan.instances[0]
        if seq.role == Role.ROOT:
            return ""
        if seq.block is not None:
            return f"The spec's block `{seq.block.name}` ({len(plan.instances)} use{'s' * (len(plan.instances) > 1)})."
        return "One copy of a repeat."

    def class_call(
        self, scope: ShapedSeq, outer: ClassWriter | None, parallel: list[ShapedSeq], sizes: Sizes
    ) -> tuple[str, dict[str, str]]:
        """`BasicBlock(64, 128, stride=2)`: a use of a planned class, with arguments as the enclosing class sees
        them (`parallel`: the same use in every instance of the enclosing class; `sizes`: its input's sizes),
        and the code given for each of the class's arguments."""
        plan = self.plans[id(scope)]
        given: dict[str, str] = {}
        positional: list[str] = []
        for name in plan.size_args:
            values = [p.input_shape[0] if name == "in_channels" else p.input_shape[-1] for p in parallel]
            given[name] = outer.size(values, sizes) if outer is not None else py_literal(values[0])
            positional.append(given[name])
        for name, per_use in plan.extra_args:
            values = [per_use[plan.instances.index(p)] for p in parallel]
            given[name] = outer.value(values) if outer is not None else py_literal(values[0])
            positional.append(given[name])
        keywords: list[str] = []
        for name, default in plan.params.items():
            values = [p.block.args[name] for p in parallel]  # type: ignore[union-attr]
            written = scope.block.written.get(name) if scope.block and scope.block.written else None
            given[name] = text = outer.value(values, written) if outer is not None else py_literal(values[0])
            if default is None:
                positional.append(text)
            elif text != py_literal(default):
                keywords.append(f"{name}={text}")
        return f"{plan.name}({', '.join([*positional, *keywords])})", given


class ClassWriter:
    """Writes `__init__` and `forward` of one class, resolving sizes against every instance of it."""

    def __init__(self, writer: FileWriter, plan: ClassPlan) -> None:
        self.writer, self.plan = writer, plan
        self.instances = plan.instances
        self.symbolic = len(plan.instances) > 1 or plan.instances[0].role != Role.ROOT
        self.init: list[str] = []
        self.forward: list[str] = []
        self.used_sizes: set[str] = set()
        self.names: set[str] = {"x", "self", "torch", "nn", "F"}
        self.only: list[int] | None = None  # the instances being resolved, when not all
        self.constants: dict[str, Any] = dict(writer.net.spec.vars)  # plus $i and $n inside a repeat's copy

    # -- sizes and values --

    def envs(self) -> list[dict[str, Any]]:
        envs = self.plan.envs()
        return envs if self.only is None else [envs[i] for i in self.only]

    def params(self) -> set[str]:
        return set(self.plan.params)

    def resolve(self, values: list[Any], candidates: list[str | None], emitted: bool = True) -> str | None:
        """The first candidate expression that gives `values` in every instance; `emitted`: it goes into the
        code (so the sizes it names become constructor arguments), rather than only tracking a size."""
        envs = self.envs()
        for candidate in candidates:
            if candidate is not None and explains(candidate, envs, values):
                if emitted:
                    self.mark(candidate)
                return candidate
        return None

    def mark(self, code: str) -> None:
        for name in ("in_channels", "in_features"):
            if re.search(rf"\b{name}\b", code):
                self.used_sizes.add(name)

    def size(self, values: list[Any], sizes: Sizes) -> str:
        """An input size of a nested class, as an expression of this class's sizes and parameters."""
        if not self.symbolic:
            return py_literal(values[0])
        found = self.resolve(values, [sizes.first, sizes.last, "in_channels", "in_features", *sorted(self.params())])
        return found if found is not None else self.value(values, hint="size")

    def value(self, values: list[Any], written: Any = None, hint: str = "size") -> str:
        """A value that may differ between instances: the spec's own expression, a parameter, a literal if it is
        the same everywhere, or else a new constructor argument."""
        if not self.symbolic:
            return py_literal(values[0])
        expr = written_expr(written, self.params(), self.constants)
        if expr is not None and explains(expr, self.envs(), values):
            return expr
        if all(same_value(v, values[0]) for v in values) and (not isinstance(written, str) or not self.symbolic):
            return py_literal(values[0])
        found = self.resolve(values, sorted(self.params()))
        if found is not None:
            return found
        if all(same_value(v, values[0]) for v in values):
            return py_literal(values[0])
        if self.only is not None:
            raise NotSymbolic(f"{hint} differs between the uses of {self.plan.name}")
        name = self._extra_name(hint)
        self.plan.extra_args.append((name, list(values)))
        return name

    def _extra_name(self, hint: str) -> str:
        taken = {n for n, _ in self.plan.extra_args} | set(self.plan.params) | {"in_channels", "in_features"}
        base = re.sub(r"\W", "_", hint)
        name, k = base, 2
        while name in taken:
            name, k = f"{base}{k}", k + 1
        return name

    def layer_call(self, infos: list[LayerInfo], sizes: Sizes) -> tuple[str, Sizes]:
        """A layer's constructor as code, and the sizes of its output."""
        template = infos[0]
        calls = [i.layer.module_call(i.input_shape) for i in infos]  # type: ignore[union-attr]
        if not self.symbolic:
            return self.writer.call(calls[0]), sizes
        fields, sym_values = self._symbolic_call(template, sizes)
        per_instance = [_call_values(c) for c in calls]
        names = _call_names(calls[0])
        slots = []
        for k, template_value in enumerate(per_instance[0]):
            values = [v[k] for v in per_instance]
            candidate = sym_values[k] if sym_values is not None and k < len(sym_values) else template_value
            hint = f"{template.attr or template.kind}_{names[k]}"
            slots.append(self._argument(template, values, candidate, template_value, sizes, hint))
        code = self.writer.call(calls[0], slots)
        # The output's sizes: one of the layer's own written expressions (out_channels: $out), or unchanged.
        outs = [i.output_shape for i in infos]
        own = [v.expr for v in fields.values() if isinstance(v, Sym)]
        options = [*own, sizes.first, sizes.last, *(s for s in slots if s and not s[0].isdigit())]
        first = self.resolve([o[0] for o in outs], options, emitted=False)
        last = self.resolve([o[-1] for o in outs], options, emitted=False)
        return code, Sizes(first, last)

    def _symbolic_call(self, template: LayerInfo, sizes: Sizes) -> tuple[dict[str, Any], list[Any] | None]:
        """The layer's fields with the spec's expressions as `Sym`s, and its module call's arguments computed
        from them and from the input's symbolic sizes (None when the layer cannot compute them symbolically)."""
        layer = template.layer
        assert isinstance(layer, LayerSpec)
        written = template.written or {}
        fields: dict[str, Any] = {}
        for name in argument_names(type(layer)):
            value = getattr(layer, name)
            expr = written_expr(written.get(name), self.params(), self.constants)
            fields[name] = Sym(expr, value) if expr is not None else value
        shape: list[Any] = list(template.input_shape)
        if sizes.last is not None:
            shape[-1] = Sym(sizes.last, shape[-1])
        if sizes.first is not None and (len(shape) > 1 or sizes.last is None):
            shape[0] = Sym(sizes.first, shape[0])
        try:
            symbolic = type(layer).model_construct(**{**layer.model_dump(), **fields}).module_call(tuple(shape))
            return fields, _call_values(symbolic)
        except (NotSymbolic, TypeError, ValueError, AttributeError):
            return fields, None

    def _argument(
        self, template: LayerInfo, values: list[Any], candidate: Any, template_value: Any, sizes: Sizes, hint: str
    ) -> str:
        """One constructor argument of a layer as code: its symbolic expression if that gives every instance's
        value, else a parameter, a literal, one of the input's sizes or a new constructor argument."""
        if has_sym(candidate) and explains(render(candidate), self.envs(), values):
            self.mark(render(candidate))
            return render(candidate)
        if (
            template.written is None
            and isinstance(values[0], int)
            and not isinstance(values[0], bool)
            and (found := self.resolve(values, sorted(self.params())))
        ):
            return found  # a layer netspec derived (an automatic shortcut): say where its sizes come from
        if all(same_value(v, values[0]) for v in values):
            return render(template_value) if not has_sym(template_value) else py_literal(values[0])
        size_candidates = [sizes.first, sizes.last] if isinstance(values[0], int) else []
        found = self.resolve(values, size_candidates)
        return found if found is not None else self.value(values, hint=hint)

    # -- the walk: attributes in __init__, statements in forward --

    def walk(self) -> None:
        sizes = Sizes("in_channels", "in_features") if self.symbolic else Sizes(None, None)
        final, out = self.seq(self.instances, "x", sizes, "x")
        self.plan.out_sizes = out
        if not self.plan.chain:
            last = self.forward[-1] if self.forward else ""
            if final == "x" and last.startswith("x = "):
                self.forward[-1] = "return " + last[len("x = ") :]
            else:
                self.forward.append(f"return {final}")
        # Only the sizes some expression uses become constructor arguments.
        self.plan.size_args = [n for n in ("in_channels", "in_features") if n in self.used_sizes]

    def seq(self, seqs: list[ShapedSeq], source: str, sizes: Sizes, target: str) -> tuple[str, Sizes]:
        """Statements computing a sequence from the variable `source` into `target` (taps get names of their
        own); returns the variable holding its output and that output's sizes."""
        template = seqs[0]
        read_later = {j for s in template.sources if s is not None for j in s}
        if 0 in read_later and source == target:  # `from: input` reads the sequence's input after `target` changes
            kept = self._fresh("inputs")
            self.forward.append(f"{kept} = {source}")
            source = kept
        values = [(source, sizes)]
        for k, child in enumerate(template.children):
            parallel = [s.children[k] for s in seqs]
            src = template.sources[k]
            inputs = [values[-1]] if src is None else [values[j] for j in src]
            expr, out_sizes = self.node(parallel, inputs)
            name = self._fresh(template.names[k] or f"t{k + 1}") if k + 1 in read_later else target
            self._statement(f"{name} = {expr}", _output_shape(child))
            values.append((name, out_sizes))
        return values[-1]

    def _statement(self, line: str, shape: tuple[int, ...] | None) -> None:
        comment = f"  # {format_shape(shape)}" if shape is not None and not self.symbolic else ""
        self.forward.append(line + comment)

    def _fresh(self, hint: str) -> str:
        base = re.sub(r"\W", "_", hint) or "t"
        base = f"{base}_" if keyword.iskeyword(base) else base
        name, n = base, 2
        while name in self.names:
            name, n = f"{base}_{n}", n + 1
        self.names.add(name)
        return name

    def attribute(self, attr: str, code: str, shape: tuple[int, ...] | None) -> None:
        comment = f"  # {format_shape(shape)}" if shape is not None and not self.symbolic else ""
        first = f"self.{attr} = {code}"
        if len(first) + len(comment) + 8 <= MAX_LINE or not code.startswith("nn.Sequential("):
            self.init.append(first + comment)
            return
        items = _split_args(code[len("nn.Sequential(") : -1])
        self.init.append(f"self.{attr} = nn.Sequential({comment}")
        self.init += [f"{INDENT}{item}," for item in items]
        self.init.append(")")

    def node(self, parallel: list[ShapedNode], inputs: list[tuple[str, Sizes]]) -> tuple[str, Sizes]:
        """Registers the node's attributes; returns the expression computing its output from `inputs`."""
        template = parallel[0]
        source, sizes = inputs[0]
        if isinstance(template, ShapedMerge):
            return self.merge(parallel, inputs)  # type: ignore[arg-type]
        if isinstance(template, LayerInfo) and template.is_tensor:
            tensor = self.tensor(template)
            dims = ", ".join(["-1"] * len(template.output_shape))
            return f"{tensor}.expand({source}.shape[0], {dims})", sizes
        code, out_sizes = self.module(parallel, sizes)
        self.attribute(str(template.attr), code, _output_shape(template))
        return f"self.{template.attr}({source})", out_sizes

    def _written_sizes(self, info: LayerInfo, argument: str, sizes: list[Any]) -> list[Any]:
        """`sizes` (a learned tensor's shape or view), the trailing ones as the block writes them (`$dim`)."""
        written = (info.written or {}).get(argument)
        if self.symbolic and isinstance(written, list):
            exprs = [written_expr(w, self.params(), self.constants) for w in written]
            offset = len(sizes) - len(exprs)
            for k, expr in enumerate(exprs):
                if expr is not None:
                    sizes[offset + k] = Sym(expr, sizes[offset + k])
        return sizes

    def tensor(self, info: LayerInfo) -> str:
        """A learned tensor: an nn.Parameter of this class, initialized as the spec says. Returns the expression
        that reads it in one example's shape, broadcasting against the batch (`self.gamma.view(1, 64, 1, 1)`
        for a tensor stored as 64 and used as 64×1×1)."""
        layer = info.layer
        stored = self._written_sizes(info, "shape", list(layer.stored_shape()))  # type: ignore[union-attr]
        shape = ", ".join(render(d) for d in stored)
        init = {
            "zeros": f"torch.zeros({shape})",
            "ones": f"torch.ones({shape})",
            "constant": f"torch.full(({shape}{',' if len(stored) == 1 else ''}), {layer.value!r})",  # type: ignore[union-attr]
            "normal": f"torch.randn({shape}) * {layer.std!r}",  # type: ignore[union-attr]
            "trunc_normal": f"nn.init.trunc_normal_(torch.empty({shape}), std={layer.std!r})",  # type: ignore[union-attr]
            "uniform": f"torch.rand({shape})",
        }[layer.init]  # type: ignore[union-attr]
        self.init.append(f"self.{info.attr} = nn.Parameter({init})")
        if layer.view is None:  # type: ignore[union-attr]
            return f"self.{info.attr}"
        view = [1, *self._written_sizes(info, "view", list(layer.view))]  # type: ignore[union-attr]
        symbolic = [k for k, d in enumerate(view) if has_sym(d)]
        if len(symbolic) == 1:  # forward does not see __init__'s arguments: the one size they give is -1 there
            view[symbolic[0]] = -1
        elif symbolic:  # several: forward reads the view __init__ computed
            self.init.append(f"self.{info.attr}_view = ({', '.join(render(d) for d in view)})")
            return f"self.{info.attr}.view(self.{info.attr}_view)"
        return f"self.{info.attr}.view({', '.join(render(d) for d in view)})"

    def module(self, parallel: list[ShapedNode], sizes: Sizes) -> tuple[str, Sizes]:
        """The constructor expression of a node that is one module (layer, block use, repeat, chain, copy)."""
        template = parallel[0]
        if isinstance(template, LayerInfo):
            return self.layer_call(parallel, sizes)  # type: ignore[arg-type]
        assert isinstance(template, ShapedSeq)
        if id(template) in self.writer.plans:
            outs = [_output_shape(p) for p in parallel]
            plan = self.writer.plans[id(template)]
            code, given = self.writer.class_call(template, self if self.symbolic else None, parallel, sizes)  # type: ignore[arg-type]
            known = plan.out_sizes or Sizes(None, None)
            through = [substitute_names(e, given) if e else None for e in (known.first, known.last)]
            return code, self._out_sizes(outs, sizes, through)
        if template.form == Form.SINGLE:
            return self.module([p.children[0] for p in parallel], sizes)  # type: ignore[union-attr]
        if template.form == Form.EMPTY:
            return "nn.Identity()", sizes
        if template.form == Form.REPEAT and repeat_of(template) is not None:
            loop = self.loop(parallel, sizes)  # type: ignore[arg-type]
            if loop is not None:
                return loop
            block = self.instances[0].block
            if self.symbolic and block is not None and (block.name, "loops") not in self.writer.strict:
                raise Replan(block.name, "loops")
        # REPEAT (copies in order) and SEQUENTIAL (children in order): each item sees the previous item's output.
        items = []
        saved = dict(self.constants)
        for k in range(len(template.children)):
            if template.form == Form.REPEAT:
                self.constants.update(i=k, n=len(template.children))
            code, sizes = self.module([p.children[k] for p in parallel], sizes)  # type: ignore[union-attr]
            items.append(code)
        self.constants = saved
        return f"nn.Sequential({', '.join(items)})", sizes

    def loop(self, repeats: list[ShapedSeq], sizes: Sizes) -> tuple[str, Sizes] | None:
        """`nn.Sequential(*[Block(...) for i in range(depth)])` for a repeat whose copies are uses of one class,
        each argument an expression of this class's parameters and the copy's index `i`; None if one is not."""
        rows = [(n, k, copy.children[0]) for n, rep in enumerate(repeats) for k, copy in enumerate(rep.children)]
        uses = [use for _, _, use in rows]
        classes = {id(self.writer.plans.get(id(use))) for use in uses}
        if len(classes) != 1 or id(uses[0]) not in self.writer.plans:
            return None
        plan = self.writer.plans[id(uses[0])]
        base = self.envs() if self.symbolic else [{}]
        envs = [{**base[n], "i": k, "n": len(repeats[n].children)} for n, k, _ in rows]
        times = self._loop_times(repeats, base)
        arguments = self._loop_arguments(plan, uses, envs, sizes) if times is not None else None
        if arguments is None:
            return None
        for code in arguments:
            self.mark(code)
        index = "i" if any(re.search(r"\bi\b", a) for a in arguments) else "_"
        call = f"{plan.name}({', '.join(arguments)})"
        outs = [_output_shape(r) for r in repeats]
        return f"nn.Sequential(*[{call} for {index} in range({times})])", self._out_sizes(outs, sizes)

    def _loop_times(self, repeats: list[ShapedSeq], base: list[dict[str, Any]]) -> str | None:
        """The loop's count: the repeat's `times` as the spec writes it, or the one count every instance has."""
        counts = [len(r.children) for r in repeats]
        times = written_expr(repeats[0].times_written, self.params(), dict(self.writer.net.spec.vars))
        if times is not None and explains(times, base, counts):
            return times
        return str(counts[0]) if len(set(counts)) == 1 else None

    def _loop_arguments(
        self, plan: ClassPlan, uses: list[ShapedSeq], envs: list[dict[str, Any]], sizes: Sizes
    ) -> list[str] | None:
        """The arguments of the looped class's call (positional, then keywords) as expressions of this class's
        parameters and the copy's index `i`, each checked against every copy (`envs`); None if one is not."""

        def explain(values: list[Any], candidates: list[str | None]) -> str | None:
            return next((c for c in candidates if c is not None and explains(c, envs, values)), None)

        args: list[str] = []
        for name in plan.size_args:
            values = [u.input_shape[0] if name == "in_channels" else u.input_shape[-1] for u in uses]
            firsts = [sizes.first, sizes.last, "in_channels", "in_features", *sorted(self.params())]
            candidates = [*firsts, *(f"{a} + i * {b}" for a in firsts[:4] if a for b in sorted(self.params()))]
            found = explain(values, candidates if self.symbolic else [])
            if found is None and len(set(values)) == 1:
                found = py_literal(values[0])
            if found is None:
                return None
            args.append(found)
        if plan.extra_args:
            return None
        keywords: list[str] = []
        written = uses[0].block.written or {}  # type: ignore[union-attr]
        names = self.params() | {"i", "n"}
        for name, default in plan.params.items():
            values = [u.block.args[name] for u in uses]  # type: ignore[union-attr]
            expr = written_expr(written.get(name), names, dict(self.writer.net.spec.vars))
            found = expr if expr is not None and explains(expr, envs, values) else None
            if found is None and all(same_value(v, values[0]) for v in values):
                found = py_literal(values[0])
            if found is None and self.symbolic:
                found = explain(values, sorted(self.params()))
            if found is None:
                return None
            if default is None:
                args.append(found)
            elif found != py_literal(default):
                keywords.append(f"{name}={found}")
        return [*args, *keywords]

    def _out_sizes(
        self, outs: list[tuple[int, ...] | None], sizes: Sizes, through: list[str | None] | None = None
    ) -> Sizes:
        if not self.symbolic or any(o is None for o in outs):
            return Sizes(None, None)
        options = [*(through or []), sizes.first, sizes.last, *sorted(self.params())]
        firsts = [o[0] for o in outs]  # type: ignore[index]
        lasts = [o[-1] for o in outs]  # type: ignore[index]
        return Sizes(self.resolve(firsts, options, emitted=False), self.resolve(lasts, options, emitted=False))

    def merge(self, merges: list[ShapedMerge], inputs: list[tuple[str, Sizes]]) -> tuple[str, Sizes]:
        """The expression combining a merge's branches (`torch.cat([...], dim=1)`), and its output's sizes."""
        template = merges[0]
        op = template.info.layer
        assert isinstance(op, MergeSpec)
        terms: list[str] = []
        branch_sizes: list[Sizes] = []
        for b, name in enumerate(template.names):
            source, sizes = inputs[b] if len(inputs) > 1 else inputs[0]
            term, out = self._branch([m.branches[b] for m in merges], name, source, sizes, op)
            terms.append(term)
            branch_sizes.append(out)
        outs = [m.info.output_shape for m in merges]
        options: list[str | None] = [branch_sizes[0].first, branch_sizes[0].last]
        if op.kind == "concat":
            for picked in ([s.first for s in branch_sizes], [s.last for s in branch_sizes]):
                if all(picked):
                    options.append(" + ".join(f"({f})" if " " in f else f for f in picked))  # type: ignore[operator]
        out_sizes = Sizes(None, None)
        if self.symbolic:
            firsts, lasts = [o[0] for o in outs], [o[-1] for o in outs]
            out_sizes = Sizes(self.resolve(firsts, options, emitted=False), self.resolve(lasts, options, emitted=False))
        return op.code(terms), out_sizes

    def _branch(
        self, parallel: list[ShapedSeq], name: str, source: str, sizes: Sizes, op: MergeSpec
    ) -> tuple[str, Sizes]:
        """One branch of a merge (the same branch in every instance): registers its attributes; returns its term
        in the merge's expression and the sizes of its output."""
        branch = parallel[0]
        condition = self.plan.optional.get(name)
        if condition is not None:  # a shortcut that is the identity in some uses
            uses = [i for i, p in enumerate(parallel) if p.form != Form.EMPTY]
            self.only = uses
            try:
                code, _ = self.module([parallel[i].children[0] for i in uses], sizes)
            except NotSymbolic:
                raise Replan(self.instances[0].block.name, "optional") from None  # type: ignore[union-attr]
            finally:
                self.only = None
            self.init.append(f"self.{name} = {code} if {condition} else nn.Identity()")
            return f"self.{name}({source})", sizes
        if branch.form == Form.EMPTY:
            return source, sizes
        if branch.form == Form.SINGLE:
            only = [p.children[0] for p in parallel]
            first = only[0]
            if isinstance(first, LayerInfo) and first.is_tensor and op.kind != "concat":
                return self.tensor(first), Sizes(None, None)  # broadcasts against the batch in + and *
            return self.node(only, [(source, sizes)])
        if branch.form == Form.SEQUENTIAL:
            code, out = self.module(parallel, sizes)  # type: ignore[arg-type]
            self.attribute(str(branch.attr), code, None)
            return f"self.{branch.attr}({source})", out
        assert branch.form == Form.FLAT
        return self.seq(parallel, source, sizes, self._fresh(name))


def _output_shape(node: ShapedNode) -> tuple[int, ...] | None:
    if isinstance(node, LayerInfo):
        return node.output_shape
    if isinstance(node, ShapedMerge):
        return node.info.output_shape
    return _output_shape(node.children[-1]) if node.children else None


def _call_values(call: ModuleCall) -> list[Any]:
    """A module call's arguments in the order its signature lists them."""
    signature = inspect.signature(call.cls.__init__)
    bound = signature.bind(None, *call.args, **call.kwargs).arguments
    return [bound[p.name] for p in list(signature.parameters.values())[1:] if p.name in bound]


def _call_names(call: ModuleCall) -> list[str]:
    """The names of a module call's arguments, in the order `_call_values` lists them."""
    signature = inspect.signature(call.cls.__init__)
    bound = signature.bind(None, *call.args, **call.kwargs).arguments
    return [p.name for p in list(signature.parameters.values())[1:] if p.name in bound]


def _split_args(text: str) -> list[str]:
    """Top-level comma-separated items of an argument list."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i].strip())
            start = i + 1
    if text[start:].strip():
        items.append(text[start:].strip())
    return items


def write_classes(net: NetShape) -> tuple[list[str], dict[type, str], dict[str, set[str]], str]:
    """The class definitions of a network: (lines, helper sources, torchvision imports, the network's class name).

    Only `torch`, `nn` and the returned helpers/imports are needed to run them.
    """
    strict: set[tuple[str, str]] = set()
    while True:
        writer = FileWriter(net, strict)
        try:
            # Bottom-up: a class's constructor arguments are known before the classes that use it are written.
            blocks = [writer.write_class(plan) for plan in writer.order]
            root = ClassPlan(class_name(net.name), [net.root], {})
            writer.plans[id(net.root)] = root
            blocks.append(writer.write_class(root))
        except Replan as replan:
            strict.add((replan.block, replan.what))
            continue
        lines: list[str] = []
        for block in blocks:
            lines += [*block, "", ""]
        return lines[:-2], writer.helpers, writer.imports, root.name
