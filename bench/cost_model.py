"""Cost model: parameters, FLOPs and bytes moved per planning cycle for each preset, and a roofline estimate of the
cycle on Jetson AGX Orin and Orin NX at FP16 and INT8.

The cycle is what the runtime runs per new camera frame (pwm_model/export/graphs.py): ``ctx_encoder`` and
``dyn_encoder`` on one frame (resize from the preset's camera size in the graph) and the unrolled ``rollout`` (prefill,
F-1 cached frame passes, the plan pass). The graphs are traced on PyTorch's meta device (no weights are allocated, so
the paper preset costs nothing to analyse); every matrix product and convolution is one kernel with

    flops = 2 * multiply-accumulates,  bytes = (inputs + weights + output) * bytes per element (2 FP16, 1 INT8)
    time  = max(flops / peak, bytes / bandwidth)                      (roofline, per kernel, summed over the cycle)

Element-wise operations, normalisations and softmax are assumed fused into their neighbours (as TensorRT does) and
not counted; the whole cycle at INT8 is an optimistic bound (TensorRT keeps some layers in FP16). ``*_derated_ms``
applies the assumed efficiencies below and a per-kernel overhead. Prints a table, then, last, one JSON line with
``params_<preset>``, ``gflops_<preset>``, ``orin_agx_fp16_ms_<preset>`` and the other estimates.

    .venv/bin/python bench/cost_model.py
    .venv/bin/python bench/cost_model.py --presets small
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@dataclass(frozen=True)
class Device:
    name: str
    fp16_tflops: float  # dense tensor-core FP16
    int8_tops: float  # dense tensor-core INT8
    bandwidth_gbs: float  # DRAM bandwidth
    source: str


# Jetson AGX Orin 64GB, MAXN: NVIDIA Jetson AGX Orin Series Technical Brief v1.2 (July 2022) and the module data sheet:
# GPU of 2048 CUDA cores and 64 third-generation Tensor Cores at up to 1.3 GHz, "170 sparse INT8 TOPS" on the GPU
# (85 dense: sparsity doubles the figure), dense FP16 on Tensor Cores at half the INT8 rate; 256-bit LPDDR5 at
# 204.8 GB/s.
ORIN_AGX = Device("Jetson AGX Orin 64GB", fp16_tflops=42.5, int8_tops=85.0, bandwidth_gbs=204.8,
                  source="Jetson AGX Orin Series Technical Brief v1.2: 170 sparse INT8 TOPS (GPU), 204.8 GB/s")
# Jetson Orin NX 16GB: NVIDIA Jetson Orin NX Series data sheet: GPU of 1024 CUDA cores and 32 Tensor Cores at up to
# 918 MHz, 128-bit LPDDR5 at 102.4 GB/s. Its Tensor-Core rates scale the AGX figures by (32 / 64) * (918 / 1300).
ORIN_NX = Device("Jetson Orin NX 16GB", fp16_tflops=42.5 * 0.5 * 918 / 1300, int8_tops=85.0 * 0.5 * 918 / 1300,
                 bandwidth_gbs=102.4,
                 source="Jetson Orin NX Series data sheet: 32 Tensor Cores at 918 MHz, 102.4 GB/s")
DEVICES = {"orin_agx": ORIN_AGX, "orin_nx": ORIN_NX}
PRECISION_BYTES = {"fp16": 2, "int8": 1}
# Assumptions of the derated estimate (not measurements): share of peak a TensorRT kernel reaches on these layer
# sizes, share of the DRAM bandwidth reached, and a launch gap per kernel (CUDA graphs keep it small).
COMPUTE_EFFICIENCY = 0.5
BANDWIDTH_EFFICIENCY = 0.7
KERNEL_OVERHEAD_US = 4.0
TARGET_SMALL_AGX_FP16_MS = 50.0  # the small preset must plan at 10 Hz with room to spare on an AGX Orin


@dataclass
class Kernel:
    op: str
    macs: int
    elements: int  # tensor elements read and written


@dataclass
class GraphCost:
    name: str
    kernels: list[Kernel] = field(default_factory=list)

    @property
    def flops(self) -> int:
        return 2 * sum(k.macs for k in self.kernels)

    def bytes(self, precision: str) -> int:
        return sum(k.elements for k in self.kernels) * PRECISION_BYTES[precision]

    def roofline_s(self, dev: Device, precision: str, derated: bool = False) -> float:
        peak = (dev.fp16_tflops if precision == "fp16" else dev.int8_tops) * 1e12
        bw = dev.bandwidth_gbs * 1e9
        if derated:
            peak, bw = peak * COMPUTE_EFFICIENCY, bw * BANDWIDTH_EFFICIENCY
        per = PRECISION_BYTES[precision]
        t = sum(max(2 * k.macs / peak, k.elements * per / bw) for k in self.kernels)
        return t + (len(self.kernels) * KERNEL_OVERHEAD_US * 1e-6 if derated else 0.0)


def _numel(x: object) -> int:
    import torch

    return int(x.numel()) if isinstance(x, torch.Tensor) else 0


def trace_costs(module: object, example: tuple) -> list[Kernel]:
    """Matrix products and convolutions of one forward pass on the meta device."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    aten = torch.ops.aten
    kernels: list[Kernel] = []

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            out = func(*args, **(kwargs or {}))
            packet = func.overloadpacket
            macs = 0
            if packet in (aten.mm, aten.addmm):
                a, b = (args[0], args[1]) if packet is aten.mm else (args[1], args[2])
                macs = a.shape[0] * a.shape[1] * b.shape[1]
            elif packet in (aten.bmm, aten.baddbmm):
                a, b = (args[0], args[1]) if packet is aten.bmm else (args[1], args[2])
                macs = a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
            elif packet is aten.convolution:
                w = args[1]  # (out channels, in channels / groups, kh, kw)
                macs = out.numel() * w.shape[1] * w.shape[2] * w.shape[3]
            if macs:
                elements = sum(_numel(a) for a in args) + _numel(out)
                kernels.append(Kernel(packet.__name__, int(macs), int(elements)))
            return out

    meta_example = tuple(t.to("meta") for t in example)
    with torch.no_grad(), Counter():
        module(*meta_example)
    return kernels


def preset_costs(name: str) -> dict[str, object]:
    import torch

    from pwm_model.config import preset
    from pwm_model.export.graphs import build_graphs
    from pwm_model.tokenizer.model import Tokenizer
    from pwm_model.world_model.model import PolicyWorldModel

    cfg = preset(name)
    with torch.device("meta"):
        tok, wm = Tokenizer(cfg.tokenizer), PolicyWorldModel(cfg)
    camera_hw = (cfg.camera.height_px, cfg.camera.width_px)
    graphs = build_graphs(tok, wm, cfg, camera_hw, "unrolled", preview=True)
    costs = {}
    for g, gm in graphs.items():
        costs[g] = GraphCost(g, trace_costs(gm.module.to("meta"), gm.example))
    cycle = GraphCost("cycle", [k for g in ("ctx_encoder", "dyn_encoder", "rollout") for k in costs[g].kernels])
    preview_f = cfg.world_model.forecast_frames
    preview = GraphCost("preview", costs["ctx_guide_decoder"].kernels + costs["dyn_decoder"].kernels * preview_f)
    n_params = sum(p.numel() for p in tok.parameters()) + sum(p.numel() for p in wm.parameters())
    return {"cfg": cfg, "params": int(n_params), "tok_params": sum(p.numel() for p in tok.parameters()),
            "wm_params": sum(p.numel() for p in wm.parameters()), "graphs": costs, "cycle": cycle,
            "preview": preview}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "paper"])
    args = parser.parse_args(argv)

    res: dict[str, object] = {}
    print("peak figures (dense):")
    for key, dev in DEVICES.items():
        print(f"  {key:9s} {dev.name}: FP16 {dev.fp16_tflops:.1f} TFLOPS, INT8 {dev.int8_tops:.1f} TOPS, "
              f"{dev.bandwidth_gbs:.1f} GB/s  [{dev.source}]")
    print(f"derated: {COMPUTE_EFFICIENCY:.0%} of peak compute, {BANDWIDTH_EFFICIENCY:.0%} of bandwidth, "
          f"{KERNEL_OVERHEAD_US:g} us per kernel\n")
    header = (f"{'preset':7s} {'graph':18s} {'params M':>9s} {'GFLOP':>8s} {'MB fp16':>8s} {'kernels':>7s} "
              f"{'AGX fp16':>9s} {'AGX int8':>9s} {'NX fp16':>8s} {'NX int8':>8s}  ms (roofline / derated)")
    print(header)
    for name in args.presets:
        c = preset_costs(name)
        cfg = c["cfg"]
        rows = [*(c["graphs"][g] for g in ("ctx_encoder", "dyn_encoder", "rollout")), c["cycle"], c["preview"]]
        for gc in rows:
            times = []
            for dev_key in ("orin_agx", "orin_nx"):
                for prec in ("fp16", "int8"):
                    rl = gc.roofline_s(DEVICES[dev_key], prec) * 1e3
                    dr = gc.roofline_s(DEVICES[dev_key], prec, derated=True) * 1e3
                    times.append(f"{rl:.1f}/{dr:.0f}")
                    if gc.name == "cycle":
                        res[f"{dev_key}_{prec}_ms_{name}"] = round(rl, 3)
                        res[f"{dev_key}_{prec}_derated_ms_{name}"] = round(dr, 3)
            params = {"cycle": f"{c['params'] / 1e6:.2f}", "rollout": f"{c['wm_params'] / 1e6:.2f}"}.get(gc.name, "-")
            print(f"{name:7s} {gc.name:18s} {params:>9s} {gc.flops / 1e9:8.2f} {gc.bytes('fp16') / 1e6:8.1f} "
                  f"{len(gc.kernels):7d} {times[0]:>9s} {times[1]:>9s} {times[2]:>8s} {times[3]:>8s}")
        res[f"params_{name}"] = c["params"]
        res[f"gflops_{name}"] = round(c["cycle"].flops / 1e9, 3)
        res[f"mbytes_fp16_{name}"] = round(c["cycle"].bytes("fp16") / 1e6, 1)
        res[f"mbytes_int8_{name}"] = round(c["cycle"].bytes("int8") / 1e6, 1)
        res[f"preview_gflops_{name}"] = round(c["preview"].flops / 1e9, 3)
        tk, wmc = cfg.tokenizer, cfg.world_model
        print(f"{'':7s} ({tk.ctx_height_px}x{tk.ctx_width_px} ctx / {tk.dyn_height_px}x{tk.dyn_width_px} dyn, "
              f"{tk.ctx_tokens}/{tk.dyn_tokens} tokens, {wmc.layers} layers d{wmc.d_model}, H {cfg.data.history_frames}"
              f", F {wmc.forecast_frames}, camera {cfg.camera.width_px}x{cfg.camera.height_px}; preview = "
              f"{wmc.forecast_frames} decoded frames, on request only)")
    if "orin_agx_fp16_ms_small" in res:
        ok = res["orin_agx_fp16_ms_small"] <= TARGET_SMALL_AGX_FP16_MS
        print(f"\nsmall on AGX Orin at FP16: {res['orin_agx_fp16_ms_small']:.1f} ms roofline, "
              f"{res['orin_agx_fp16_derated_ms_small']:.1f} ms derated (target <= {TARGET_SMALL_AGX_FP16_MS:g} ms: "
              f"{'met' if ok else 'missed'})")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
