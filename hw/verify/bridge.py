"""The simulator standing in for generated nodes the available library cannot build.

A chained run (:mod:`.chain`) must get through every node. Where a node's generated code cannot
be built here (:class:`~.node.LibraryMismatch`: ``Pool_hls`` against a finn-hlslib older than
the pinned one), :func:`simulator_bridge` computes that node with the simulator's layer of the
package (``fcnseg.host.sim.layers``) on the chain's *own* tensors, converted between finn's
stream layouts and the simulator's. The chain marks such nodes ``bridged``; every report says so.
"""

from __future__ import annotations

import numpy as np

from fcnseg.errors import UserError
from fcnseg.host.package import Package, parse_dtype
from fcnseg.host.sim.layers import OPS
from fcnseg.hw.to_package import base_kind
from fcnseg.hw.verify.chain import Bridge, HardwareGraph, HardwareNode
from fcnseg.hw.verify.tensors import from_finn_layout, to_finn_layout


def layers_by_node(package: Package, graph: HardwareGraph) -> dict[str, object]:
    """Hardware node name -> package layer: the same graph in the same order (the package is
    written before specialisation, so names differ by ``_hls``/``_rtl``; kinds must agree)."""
    if len(package.layers) != len(graph.nodes):
        raise UserError(
            f"{graph.root}: {len(graph.nodes)} nodes, but the package has "
            f"{len(package.layers)} layers: not this package's hardware"
        )
    pairs = {}
    for node, layer in zip(graph.nodes, package.layers, strict=True):
        if base_kind(node.kind) != layer.kind or list(node.outputs) != list(layer.outputs):
            raise UserError(f"{graph.root}: node {node.name} does not match layer {layer.name}")
        pairs[node.name] = layer
    return pairs


def simulator_bridge(package: Package, graph: HardwareGraph) -> Bridge:
    """A :data:`~.chain.Bridge` computing nodes with the package's simulator layers."""
    layers = layers_by_node(package, graph)
    layouts = graph.layouts()
    ranges = _ranges(package)

    def bridge(node: HardwareNode, inputs: list[np.ndarray]) -> list[np.ndarray]:
        layer = layers[node.name]
        sim_inputs = []
        for t, x in zip(node.inputs, inputs, strict=True):
            sim_inputs.append(x if t not in layouts else from_finn_layout(*layouts[t], x))
        op = OPS[layer.kind](layer, [ranges[t] for t in layer.inputs])
        outs = op(*sim_inputs)
        pairs = zip(node.outputs, outs, strict=True)
        return [to_finn_layout(*layouts[t], np.asarray(o)) for t, o in pairs]

    return bridge


def _ranges(package: Package) -> dict[str, tuple[int, int]]:
    """Every tensor's integer range, as the simulator derives it (for building layer ops)."""
    ranges = {package.input["name"]: parse_dtype(package.input["dtype"])}
    for layer in package.layers:
        op = OPS[layer.kind](layer, [ranges[t] for t in layer.inputs])
        ranges.update(zip(layer.outputs, op.out_ranges, strict=True))
    return ranges
