"""Every invalid spec ends in one clear message with file:line:col, layer and numbers, exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from netspec.cli import main
from netspec.layers import LAYER_KINDS, MERGE_KINDS

HEADER = "name: t\ninput: [1, 28, 28]\nlayers:\n"
TOKENS = "name: t\ninput: [16, 64]\nlayers:\n"

# (spec text, the exact message after "error: ")
CASES = [
    # Tokens and ranks: dims count the batch as torch does; every message shows the shapes.
    pytest.param(
        "name: t\ninput: [3, 8, 8]\nlayers:\n  - flatten: {start_dim: 4}\n",
        "{f}:4:5: layers[0] flatten: start_dim 4 is out of range for a batch of rank 4 (dims -4..3) "
        "(input 3×8×8 from the spec's input)",
        id="flatten-dim-out-of-range",
    ),
    pytest.param(
        "name: t\ninput: [3, 8, 8]\nlayers:\n  - flatten: {begin: 2}\n",
        "{f}:4:15: layers[0] flatten: unknown argument 'begin'; flatten takes: start_dim, end_dim",
        id="flatten-unknown-argument",
    ),
    pytest.param(
        "name: t\ninput: [197, 512]\nlayers:\n  - linear: {in_features: 768, out_features: 10}\n",
        "{f}:4:5: layers[0] linear: expects 768 features in the last dimension, got 197×512 "
        "(input 197×512 from the spec's input)",
        id="linear-on-tokens",
    ),
    pytest.param(
        "name: t\ninput: [3, 8, 8]\nlayers:\n  - permute: {dims: [1, 0, 2, 3]}\n",
        "{f}:4:5: layers[0] permute: dims [1, 0, 2, 3]: the batch (0) must stay first "
        "(input 3×8×8 from the spec's input)",
        id="permute-moves-the-batch",
    ),
    pytest.param(
        "name: t\ninput: [3, 8, 8]\nlayers:\n  - reshape: {shape: [5, 5]}\n",
        "{f}:4:5: layers[0] reshape: cannot reshape 3×8×8 (192 values) to 5×5 (25 values) "
        "(input 3×8×8 from the spec's input)",
        id="reshape-count",
    ),
    pytest.param(
        "name: t\ninput: [16, 64]\nlayers:\n  - multihead_attention: {num_heads: 5}\n",
        "{f}:4:5: layers[0] multihead_attention: 64 features are not divisible by num_heads 5 "
        "(input 16×64 from the spec's input)",
        id="attention-heads",
    ),
    pytest.param(
        "name: t\ninput: [16, 64]\nlayers:\n  - add:\n    - identity\n    - [parameter: {shape: [17, 64]}]\n",
        "{f}:4:5: layers[0] add: branch 0 gives 16×64 but branch 1 gives 17×64 (dimension 1 differs (16 vs 17) "
        "and neither is 1 to broadcast); "
        "branches: layers[0].branch[0] 16×64, layers[0].branch[1] 17×64",
        id="learned-tensor-shape",
    ),
    pytest.param(
        "name: t\ninput: [3, 8, 8]\nlayers:\n  - frobnicate\n",
        "{f}:4:5: layers[0]: unknown layer kind 'frobnicate' (neither a layer kind nor a block); the kinds are: "
        + ", ".join(sorted([*LAYER_KINDS, *MERGE_KINDS, "repeat", "residual"]))
        + "; the spec defines no blocks",
        id="unknown-kind-lists-the-kinds",
    ),
    pytest.param(
        "name: t\ninput: [3, 8, 8]\nlayers:\n  - relu: {inplace: true}\n",
        "{f}:4:12: layers[0] relu: unknown argument 'inplace'; relu takes: no arguments",
        id="no-arguments",
    ),
    pytest.param(
        # The first problem in the file is the unknown kind in the block (line 6), not the shape error at line 9:
        # blocks are expanded before any shape is inferred.
        "name: t\ninput: [1, 8, 8]\nblocks:\n  unit:\n    layers:\n      - conv2dd: {out_channels: 4}\n"
        "layers:\n  - relu\n  - maxpool2d: {kernel_size: 9}\n  - unit\n",
        "{f}:6:9: layers[2].unit[0]: unknown layer kind 'conv2dd' (did you mean 'conv2d'?)",
        id="errors-in-file-order",
    ),
    pytest.param(
        "name: t\ninput: [3, 8, 8]\ntrain:\n  optimiser: adam\nlayers:\n  - relu\n",
        "{f}:4:3: unknown key 'train.optimiser' (did you mean 'optimizer'?)",
        id="train-key-typo",
    ),
    pytest.param(
        "name: t\ninput: [1, 12, 12]\nlayers:\n  - conv2d: {out_channels: 16, kernel_size: 5}\n"
        "  - relu\n  - maxpool2d: {kernel_size: 2}\n  - maxpool2d: {kernel_size: 5}\n",
        "{f}:7:5: layers[3] maxpool2d: kernel_size 5 is larger than its padded input 4×4 "
        "(input 16×4×4 after layers[2])",
        id="kernel-larger-than-input",
    ),
    pytest.param(
        HEADER + "  - conv2:  {out_channels: 6, kernel_size: 5}\n",
        "{f}:4:5: layers[0]: unknown layer kind 'conv2' (did you mean 'conv2d'?)",
        id="unknown-kind",
    ),
    pytest.param(
        HEADER + "  - conv2d: {out_channels: 6, kernel_sise: 5}\n",
        "{f}:4:31: layers[0] conv2d: unknown argument 'kernel_sise' (did you mean 'kernel_size'?); "
        "conv2d takes: out_channels, kernel_size, in_channels, stride, padding, dilation, groups, bias",
        id="unknown-argument",
    ),
    pytest.param(
        HEADER + "  - conv2d: {out_channels: 6}\n",
        "{f}:4:13: layers[0] conv2d: missing required argument 'kernel_size'",
        id="missing-argument",
    ),
    pytest.param(
        HEADER + "  - conv2d: {out_channels: 0, kernel_size: 0, stride: 0, dilation: 0, groups: 0, padding: -1}\n",
        "{f}:4:28: layers[0] conv2d: out_channels: input should be greater than 0, got 0\n"
        "{f}:4:44: layers[0] conv2d: kernel_size: input should be greater than 0, got 0\n"
        "{f}:4:55: layers[0] conv2d: stride: input should be greater than 0, got 0\n"
        "{f}:4:91: layers[0] conv2d: padding: input should be greater than or equal to 0, got -1\n"
        "{f}:4:68: layers[0] conv2d: dilation: input should be greater than 0, got 0\n"
        "... and 1 more problem",
        id="many-problems",
    ),
    pytest.param(
        HEADER + "  - conv2d: {out_channels: 6, kernel_size: 0}\n",
        "{f}:4:44: layers[0] conv2d: kernel_size: input should be greater than 0, got 0",
        id="zero-size",
    ),
    pytest.param(
        HEADER + "  - maxpool2d: {kernel_size: [0, 3]}\n",
        "{f}:4:31: layers[0] maxpool2d: kernel_size.0: input should be greater than 0, got 0",
        id="zero-in-a-pair",
    ),
    pytest.param(
        HEADER + "  - residual:\n      layers: [relu]\n      shortcut:\n        - linear: {out_features: 0}\n",
        "{f}:7:34: layers[0].shortcut[0] linear: out_features: input should be greater than 0, got 0",
        id="bad-layer-in-shortcut-list",
    ),
    pytest.param(
        HEADER + "  - conv2d: {out_channels: -6, kernel_size: 3}\n",
        "{f}:4:28: layers[0] conv2d: out_channels: input should be greater than 0, got -6",
        id="negative-size",
    ),
    pytest.param(
        HEADER + "  - linear: {in_features: 784, out_features: 10}\n",
        "{f}:4:5: layers[0] linear: expects 784 features in the last dimension, got 1×28×28; add a flatten layer "
        "before it (input 1×28×28 from the spec's input)",
        id="linear-on-image",
    ),
    pytest.param(
        HEADER + "  - conv2d: {out_channels: 8, kernel_size: 3, stride: 2}\n" * 5,
        "{f}:7:5: layers[3] conv2d: kernel_size 3 is larger than its padded input 2×2 (input 8×2×2 after layers[2])",
        id="shrinks-to-nothing",
    ),
    pytest.param(
        HEADER + "  - conv2d: {in_channels: 3, out_channels: 6, kernel_size: 5}\n",
        "{f}:4:5: layers[0] conv2d: in_channels is 3 but the input has 1 (input 1×28×28 from the spec's input)",
        id="declared-in-channels-wrong",
    ),
    pytest.param("", "{f}: the spec is empty; it needs at least name, input and layers", id="empty-file"),
    pytest.param(
        "- relu\n- flatten\n",
        "{f}:1:1: a spec must be a mapping with name, input and layers, not a list",
        id="list-instead-of-mapping",
    ),
    pytest.param(
        "name: t\ninput: [1, 28, 28\nlayers: []\n",
        "{f}:3:7: invalid YAML: while parsing a flow sequence: expected ',' or ']', but got ':'",
        id="malformed-yaml",
    ),
    pytest.param(
        "name: t\ninput: [1, 28, 28]\nlayers: [relu]\nlayers: [tanh]\n",
        "{f}:4:1: duplicate key 'layers' (first given on line 3)",
        id="duplicate-key",
    ),
    pytest.param(
        "name: t\ninput: [1, 28, 28]\nlayrs: [relu]\n",
        "{f}:3:1: unknown top-level key 'layrs' (did you mean 'layers'?)",
        id="unknown-top-level-key",
    ),
    pytest.param(
        HEADER + "  - !!python/object/apply:os.system 'echo pwned'\n",
        "{f}:4:5: invalid YAML: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object/apply:os.system'",
        id="python-object-tag-scalar",
    ),
    pytest.param("name: t\nlayers: [relu]\n", "{f}:1:1: missing required key 'input'", id="missing-input"),
    pytest.param(
        HEADER + "  - !!python/object/apply:os.system ['echo pwned']\n",
        "{f}:4:5: invalid YAML: unsupported tag 'tag:yaml.org,2002:python/object/apply:os.system'",
        id="python-object-tag",
    ),
    pytest.param(
        HEADER + "  - {conv2d: {out_channels: 6, kernel_size: 3}, relu: null}\n",
        "{f}:4:5: layers[0]: a layer is one name or a one-key mapping (conv2d: ...); this mapping has 2 keys "
        "(conv2d, relu): put each layer in its own list item",
        id="two-layers-in-one-item",
    ),
    pytest.param(
        HEADER + "  - conv2d: {out_channels: 6, kernel_size: 3, stride: 2, padding: same}\n",
        "{f}:4:5: layers[0] conv2d: padding 'same' needs stride 1 (torch does not support strided 'same') "
        "(input 1×28×28 from the spec's input)",
        id="strided-same",
    ),
    pytest.param(
        HEADER + "  - maxpool2d: {kernel_size: 2, padding: 2}\n",
        "{f}:4:5: layers[0] maxpool2d: padding 2 is more than half of kernel_size 2 (input 1×28×28 from the spec's input)",
        id="pool-padding",
    ),
    pytest.param(
        HEADER + "  - residual:\n      layers:\n        - conv2d: {out_channels: 4, kernel_size: 3}\n"
        "      shortcut: identity\n",
        "{f}:5:7: layers[0] residual: the body gives 4×26×26 but the shortcut gives 1×28×28; "
        "they must match to be added",
        id="residual-mismatch",
    ),
    pytest.param(
        "name: t\ninput: [1, 28, 28]\nblocks:\n  cbr:\n    params: {out: null}\n    layers:\n"
        "      - conv2d: {out_channels: $out, kernel_size: 3}\nlayers:\n  - cbr: {outt: 4}\n",
        "{f}:9:11: layers[0] cbr: unknown parameter 'outt' (did you mean 'out'?); block cbr takes: out",
        id="block-unknown-parameter",
    ),
    pytest.param(
        "name: t\ninput: [1, 28, 28]\nblocks:\n  cbr:\n    params: {out: null}\n    layers:\n"
        "      - conv2d: {out_channels: $out, kernel_size: 3}\nlayers:\n  - cbr\n",
        "{f}:9:5: layers[0] cbr: block cbr needs parameter out",
        id="block-missing-parameter",
    ),
    pytest.param(
        "name: t\ninput: [1, 28, 28]\nblocks:\n  cbr:\n    params: {out: 4}\n    layers:\n"
        "      - conv2d: {out_channels: $out, kernel_size: 3}\nlayers:\n  - cbr: {out: 0}\n",
        "{f}:7:32: layers[0].cbr[0] conv2d: out_channels: input should be greater than 0, got 0",
        id="bad-block-argument",
    ),
    pytest.param(
        "name: t\ninput: [1, 28, 28]\nblocks:\n  cbr:\n    params: {out: 4}\n    layers:\n"
        "      - conv2d: {out_channels: $out, kernel_size: 99}\nlayers:\n  - cbr\n",
        "{f}:7:9: layers[0].cbr[0] conv2d: kernel_size 99 is larger than its padded input 28×28 "
        "(input 1×28×28 from the spec's input)",
        id="error-inside-block",
    ),
    pytest.param(
        "name: t\ninput: [1, 28, 28]\nblocks:\n  a:\n    layers: [b]\n  b:\n    layers: [a]\nlayers:\n  - a\n",
        "{f}:7:14: layers[0].a[0].b[0] a: block a uses itself (a → b → a)",
        id="recursive-block",
    ),
    pytest.param(
        HEADER + "  - flatten\n  - batchnorm2d\n",
        "{f}:5:5: layers[1] batchnorm2d: expects an image (channels×height×width) input, got 784 "
        "(input 784 after layers[0])",
        id="batchnorm2d-on-vector",
    ),
    pytest.param(
        "name: t\ninput: [1, 28, 28]\nlayers: [relu]\ntrain: {optimizer: rmsprop}\n",
        "{f}:4:20: train.optimizer: input should be 'sgd', 'adam' or 'adamw', got 'rmsprop'",
        id="bad-train-section",
    ),
    # --- graphs: merges, branches and taps ---
    pytest.param(
        HEADER + "  - concat:\n      - [conv2d: {out_channels: 8, kernel_size: 3}]\n"
        "      - [conv2d: {out_channels: 4, kernel_size: 1}]\n",
        "{f}:4:5: layers[0] concat: branch 0 gives 8×26×26 but branch 1 gives 4×28×28 (spatial sizes must agree); "
        "branches: layers[0].branch[0] 8×26×26, layers[0].branch[1] 4×28×28",
        id="concat-spatial-mismatch",
    ),
    pytest.param(
        HEADER + "  - add:\n      - [conv2d: {out_channels: 4, kernel_size: 1}]\n"
        "      - [conv2d: {out_channels: 2, kernel_size: 1}]\n",
        "{f}:4:5: layers[0] add: branch 0 gives 4×28×28 but branch 1 gives 2×28×28 (dimension 1 differs (4 vs 2) "
        "and neither is 1 to broadcast); branches: layers[0].branch[0] 4×28×28, layers[0].branch[1] 2×28×28",
        id="add-mismatch",
    ),
    pytest.param(
        HEADER + "  - multiply:\n      - identity\n      - [flatten]\n",
        "{f}:4:5: layers[0] multiply: branch 0 gives 1×28×28 but branch 1 gives 784 (ranks differ); "
        "branches: layers[0].branch[0] 1×28×28, layers[0].branch[1] 784",
        id="multiply-rank-mismatch",
    ),
    pytest.param(
        HEADER + "  - multiply:\n      - identity\n      - [maxpool2d: {kernel_size: 2}]\n",
        "{f}:4:5: layers[0] multiply: branch 0 gives 1×28×28 but branch 1 gives 1×14×14 (dimension 2 differs "
        "(28 vs 14) and neither is 1 to broadcast); branches: layers[0].branch[0] 1×28×28, layers[0].branch[1] 1×14×14",
        id="multiply-cannot-broadcast",
    ),
    pytest.param(
        HEADER + "  - concat: [[relu]]\n",
        "{f}:4:5: layers[0] concat: concat needs at least two branches (or two inputs in from) to combine, got 1",
        id="merge-with-one-branch",
    ),
    pytest.param(
        HEADER + "  - concat:\n      - relu\n      - identity\n",
        "{f}:5:9: layers[0] concat: branch[0]: a branch is a list of layers or identity; write one layer in "
        "brackets: [relu], got 'relu'",
        id="branch-not-a-list",
    ),
    pytest.param(
        HEADER + "  - concat: {branchs: []}\n",
        "{f}:4:14: layers[0] concat: unknown argument 'branchs' (did you mean 'branches'?); concat takes: branches, dim",
        id="merge-unknown-argument",
    ),
    pytest.param(
        HEADER + "  - add:\n      - [conv2d: {out_channels: 0, kernel_size: 1}]\n      - identity\n",
        "{f}:5:33: layers[0].branch[0][0] conv2d: out_channels: input should be greater than 0, got 0",
        id="bad-layer-in-branch",
    ),
    pytest.param(
        "name: t\ninput: [1, 28, 28]\nblocks:\n  two:\n    params: {c: 4}\n    layers:\n      - concat:\n"
        "        - [conv2d: {out_channels: $c, kernel_size: 3}]\n        - identity\nlayers:\n  - two: {c: 2}\n",
        "{f}:7:9: layers[0].two[0] concat: branch 0 gives 2×26×26 but branch 1 gives 1×28×28 (spatial sizes must "
        "agree); branches: layers[0].two[0].branch[0] 2×26×26, layers[0].two[0].branch[1] 1×28×28",
        id="merge-mismatch-inside-block",
    ),
    pytest.param(
        HEADER + "  - concat:\n    from: [input, input]\n    dim: 0\n",
        "{f}:4:5: layers[0]: 'dim' is an argument of concat: indent under concat, or write concat: {{dim: ...}}",
        id="merge-argument-beside-from",
    ),
    pytest.param(
        HEADER + "  - conv2d: {out_channels: 4, kernel_size: 1}\n    as: a\n  - add:\n    from: [a, b]\n",
        "{f}:7:11: layers[1] add: unknown name 'b' in from; names here: input, a (a name is seen by the later "
        "entries of its own sequence)",
        id="tap-unknown-name",
    ),
    pytest.param(
        HEADER + "  - conv2d: {out_channels: 4, kernel_size: 1}\n    as: enc\n  - add:\n    from: [enc, ecn]\n",
        "{f}:7:11: layers[1] add: unknown name 'ecn' in from (did you mean 'enc'?); names here: input, enc "
        "(a name is seen by the later entries of its own sequence)",
        id="tap-typo",
    ),
    pytest.param(
        HEADER + "  - relu: null\n    from: b\n  - relu: null\n    as: b\n",
        "{f}:5:11: layers[0] relu: takes its input from 'b', which is defined later (layers[1]); an entry can "
        "only read outputs of entries before it (a cycle otherwise)",
        id="tap-defined-later",
    ),
    pytest.param(
        HEADER + "  - relu: null\n    from: x\n    as: x\n",
        "{f}:5:11: layers[0] relu: takes its input from its own output 'x' (a cycle)",
        id="tap-cycle",
    ),
    pytest.param(
        HEADER + "  - relu: null\n    as: input\n",
        "{f}:5:9: layers[0]: the name 'input' is reserved for the sequence's input",
        id="tap-reserved-name",
    ),
    pytest.param(
        HEADER + "  - {as: a, relu: null}\n  - relu: null\n    as: a\n",
        "{f}:6:9: layers[1]: the name 'a' is already the name of layers[0]",
        id="tap-duplicate-name",
    ),
    pytest.param(
        HEADER + "  - relu: null\n    from: [input, input]\n",
        "{f}:5:11: layers[0]: takes 2 inputs (input, input) but only a merge (concat, add, multiply) combines "
        "several; give one name in from",
        id="several-inputs-to-a-layer",
    ),
    pytest.param(
        HEADER + "  - relu: null\n    as: 3x\n",
        "{f}:5:9: layers[0]: as: string should match pattern '^[A-Za-z_][A-Za-z0-9_]*$', got '3x'",
        id="tap-bad-name",
    ),
    pytest.param(
        HEADER + "  - conv2d:\n    out_channels: 6\n    kernel_size: 5\n",
        "{f}:4:5: layers[0]: 'out_channels', 'kernel_size' are arguments of conv2d: indent under conv2d, or "
        "write conv2d: {{out_channels: ...}}",
        id="arguments-not-indented",
    ),
    # --- new layer kinds ---
    pytest.param(
        HEADER + "  - conv_transpose2d: {out_channels: 4, kernel_size: 3, stride: 2, output_padding: 2}\n",
        "{f}:4:5: layers[0] conv_transpose2d: output_padding 2 must be smaller than stride 2 or dilation 1 "
        "(input 1×28×28 from the spec's input)",
        id="conv-transpose-output-padding",
    ),
    pytest.param(
        HEADER + "  - upsample: {scale_factor: 2, size: 4}\n",
        "{f}:4:15: layers[0] upsample: give exactly one of scale_factor and size",
        id="upsample-both",
    ),
    pytest.param(
        HEADER + "  - groupnorm: {num_groups: 3}\n",
        "{f}:4:5: layers[0] groupnorm: 1 channels are not divisible by num_groups 3 (input 1×28×28 from the "
        "spec's input)",
        id="groupnorm-groups",
    ),
    pytest.param(
        HEADER + "  - channel_shuffle: {groups: 2}\n",
        "{f}:4:5: layers[0] channel_shuffle: 1 channels are not divisible by groups 2 (input 1×28×28 from the "
        "spec's input)",
        id="channel-shuffle-groups",
    ),
    pytest.param(
        HEADER + "  - relux6\n",
        "{f}:4:5: layers[0]: unknown layer kind 'relux6' (did you mean 'relu6'?)",
        id="unknown-kind-near-relu6",
    ),
    # Blocks, taps and conditions (issue 29): the real problem first, and where `from:`/`as:`/`if:` go.
    pytest.param(
        TOKENS + "  - linear: {out_features: 64}\n    as: q\n  - frobmul: {}\n    from: [input, q]\n",
        "{f}:6:5: layers[1]: unknown layer kind 'frobmul' (neither a layer kind nor a block); the kinds are: "
        + ", ".join(sorted([*LAYER_KINDS, *MERGE_KINDS, "repeat", "residual"]))
        + "; the spec defines no blocks",
        id="unknown-kind-before-its-inputs",
    ),
    pytest.param(
        TOKENS + "  - difference: [identity, identity]\n",
        "{f}:4:5: layers[0]: unknown layer kind 'difference' (neither a layer kind nor a block); the kinds are: "
        + ", ".join(sorted([*LAYER_KINDS, *MERGE_KINDS, "repeat", "residual"]))
        + "; the spec defines no blocks",
        id="unknown-kind-with-a-list",
    ),
    pytest.param(
        "name: t\ninput: [16, 64]\nblocks:\n  b: {layers: [relu]}\nlayers:\n  - b: [identity, identity]\n",
        "{f}:6:8: layers[0] b: the parameters of block b are a mapping (name: value), not a list; it takes: none",
        id="block-parameters-as-a-list",
    ),
    pytest.param(
        TOKENS + "  - linear: {out_features: 64}\n    as: q\n  - concat: {from: [input, q], dim: -1}\n",
        "{f}:6:14: layers[1] concat: unknown argument 'from': from: goes beside the kind, not among its arguments; "
        "write '- concat: ...' and under it, indented like concat, 'from: [input, q]'",
        id="from-among-a-merge's-arguments",
    ),
    pytest.param(
        "name: t\ninput: [16, 64]\nblocks:\n  b: {layers: [relu]}\nlayers:\n  - b: {as: y}\n",
        "{f}:6:9: layers[0] b: unknown parameter 'as': as: goes beside the kind, not among its arguments; "
        "write '- b: ...' and under it, indented like b, 'as: y'; block b takes: none",
        id="as-among-a-block's-parameters",
    ),
    pytest.param(
        TOKENS + "  - linear: {out_features: 8}\n  - batchnorm\n    as: x\n  - relu\n",
        "{f}:6:7: invalid YAML: mapping values are not allowed here; '- batchnorm' is a bare name, so 'as:' below it "
        "cannot belong to it: write '- batchnorm:' (a colon after the kind; its arguments, if any, after the colon) "
        "and keep 'as:' under it, indented like batchnorm (column 5)",
        id="bare-name-then-as",
    ),
    pytest.param(
        "name: t\ninput: [3, 8, 8]\nblocks:\n  b:\n    params: {ch: 4}\n    layers:\n"
        "      - conv2d: {out_channels: $ch, kernel_size: 3}\n      - $extra: {ch: 4}\nlayers:\n  - b\n",
        "{f}:8:9: layers[0].b[1]: '$extra' is not a parameter of block b (it takes: ch), so nothing replaces it; "
        "declare it with the layer it stands for (params: {{extra: {{leaky_relu: {{negative_slope: 0.1}}}}}}) "
        "and write '- $extra'",
        id="unknown-parameter-as-a-kind",
    ),
    pytest.param(
        "name: t\ninput: [3, 8, 8]\nblocks:\n  b:\n    params: {act: relu}\n    layers:\n"
        "      - $act: {inplace: true}\nlayers:\n  - b\n",
        "{f}:7:9: layers[0].b[0]: '$act' is written as a kind with arguments, but a $name is replaced only where it "
        "stands alone; give the layer with its arguments as the value (act: {{leaky_relu: {{negative_slope: 0.1}}}}) "
        "and write '- $act'",
        id="parameter-as-a-kind-with-arguments",
    ),
    pytest.param(
        TOKENS + "  - $extra: {ch: 4}\n",
        "{f}:4:5: layers[0]: '$extra' is not a variable of the spec, so nothing replaces it; a spec variable holds "
        "a number or a word (vars: {{extra: relu}}, used as '- $extra'), a block parameter may hold a layer with its "
        "arguments (extra: {{leaky_relu: {{negative_slope: 0.1}}}})",
        id="unknown-variable-as-a-kind",
    ),
    pytest.param(
        TOKENS + "  - relu:\n    if: relu > 0\n",
        '{f}:5:9: layers[0]: if: a condition is true or false, e.g. if: "$se > 0" (a $ before each block parameter '
        "or spec variable), got 'relu > 0'",
        id="condition-without-dollar",
    ),
    pytest.param(
        "name: t\ninput: [16, 64]\nvars: {big: 1}\nlayers:\n  - linear: {out_features: 64}\n    as: q\n"
        "  - add: [identity, identity]\n    from: [input, q]\n    if: $big > 2\n    as: s\n",
        "{f}:9:9: layers[1]: is left out (its if: is false) but reads 2 inputs, so its name 's' has no one input to "
        "stand for; a named entry that may be left out reads one input",
        id="left-out-merge-of-two-inputs",
    ),
    pytest.param(
        "name: t\ninput: [3, 8, 8]\nblocks:\n  b:\n    outputs: [skip]\n    layers:\n      - relu:\n"
        "        as: skp\nlayers:\n  - b\n",
        "{f}:5:14: layers[0] b: block b declares the output 'skip' but no entry of its body is named skip (as: skip) "
        "(did you mean 'skp'?); names in its body: skp",
        id="output-not-named-in-the-body",
    ),
    pytest.param(
        "name: t\ninput: [3, 8, 8]\nblocks:\n  b:\n    outputs: [skip]\n    layers:\n      - relu:\n"
        "        as: skip\nlayers:\n  - b\n  - b\n  - relu:\n    from: b.skip\n",
        "{f}:13:11: layers[2] relu: 'b.skip' is an output of more than one use of block b before it; give each use "
        "its own name (as: NAME) and read NAME.skip",
        id="two-unnamed-uses-of-a-block-with-outputs",
    ),
    pytest.param(
        "name: t\ninput: [3, 8, 8]\nblocks:\n  b:\n    outputs: [skip]\n    layers:\n      - relu:\n"
        "        as: skip\nlayers:\n  - b:\n    as: e\n  - relu:\n    from: e.skp\n",
        "{f}:13:11: layers[1] relu: unknown name 'e.skp' in from (did you mean 'e.skip'?); names here: input, "
        "e.skip, e (a name is seen by the later entries of its own sequence)",
        id="unknown-output",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_invalid_spec_message_and_exit_code(text: str, expected: str, tmp_path: Path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code = main(["build", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"error: {expected.format(f=path)}\n"
    assert "Traceback" not in err


def test_missing_file(tmp_path: Path, capsys):
    assert main(["build", str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nope.yaml'}: no such file\n"


def test_directory(tmp_path: Path, capsys):
    assert main(["build", str(tmp_path)]) == 2
    assert "is a directory, not a spec file" in capsys.readouterr().err
