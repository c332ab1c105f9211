"""ESTIMATED model latency on Raspberry Pi 4 / 5 and Jetson Nano (no board was measured).

Method: count the multiply-accumulates of EfficientNet-Lite0 at 224x224 from the PyTorch
module itself, then scale a published per-board int8 figure for a model of known MACs
(MobileNet v2 1.0, 300 M MACs) by the MAC ratio. Board-to-board factors come from published
comparisons. Every figure used is listed with its source in ``SOURCES``; each assumption is
written next to the number it produces. Treat the output as a planning estimate to be
replaced by a measurement on the board (``python -m bench.speed`` runs there unchanged).

Run alone: ``python -m bench.boards``.
"""

from __future__ import annotations

from bench.common import macs_of_model, print_table, save_results, torch_available

MOBILENET_V2_GMACS = 0.300  # MobileNet v2 1.0 224 (Sandler et al. 2018, Table 4: 300 M MAdds)

SOURCES = {
    "xnnpack": (
        "google/XNNPACK README, 'Raspberry Pi' table (benchmarked Feb 8, 2022, end2end-bench, "
        "multi-threaded = 4 threads): INT8 MobileNet v2 1.0X takes 17 ms on RPi 4 (BCM2711, "
        "ARM64) and 20 ms on 32-bit Raspbian; FP32 46 ms (ARM64)."
    ),
    "efficientnet_lite": (
        "tensorflow/tpu, models/official/efficientnet/lite/README.md: EfficientNet-Lite0 "
        "has 4.7 M params, 407 M MAdds; INT8 CPU latency 6.5 ms on a Pixel 4 (4 threads, "
        "batch 1), FP32 12 ms."
    ),
    "pi5": (
        "Raspberry Pi 5 launch announcement (raspberrypi.com, Oct 2023): '2-3x increase in "
        "CPU performance relative to Raspberry Pi 4' (quoted from memory). aallan/"
        "benchmarking-ml-on-the-edge reports TensorFlow Lite MobileNet v2 (SSD, 300x300) at "
        "112.6 ms on a Pi 4 vs 23.5 ms on a Pi 5 (4.8x, different TFLite builds: an upper "
        "bound)."
    ),
    "nano": (
        "Jetson Nano CPU: 4x Cortex-A57 at 1.43 GHz vs the Pi 4's 4x Cortex-A72 at "
        "1.5-1.8 GHz. No published TFLite int8 figure was found; the A57 is taken as "
        "1.3-1.7x slower than the A72 (clock x IPC, from memory). lensbox does not use the "
        "Nano's GPU (that would need TensorRT)."
    ),
}


def estimate(gmacs: float, views_per_query: int = 3) -> list[dict]:
    """Per-view and per-query (default 3 views) model time per board, low-high."""
    pi4 = 17.0 * gmacs / MOBILENET_V2_GMACS  # ARM64, 4 threads
    boards = [
        ("Raspberry Pi 4 (64-bit OS)", pi4, pi4, "xnnpack"),
        (
            "Raspberry Pi 4 (32-bit OS)",
            20.0 * gmacs / MOBILENET_V2_GMACS,
            20.0 * gmacs / MOBILENET_V2_GMACS,
            "xnnpack",
        ),
        ("Raspberry Pi 5", pi4 / 4.8, pi4 / 2.0, "pi5"),
        ("Jetson Nano (CPU)", pi4 * 1.3, pi4 * 1.7, "nano"),
    ]
    rows = []
    for name, lo, hi, src in boards:
        rows.append(
            {
                "board": name,
                "view_ms_low": lo,
                "view_ms_high": hi,
                "query_ms_low": lo * views_per_query,
                "query_ms_high": hi * views_per_query,
                # One XNNPACK thread instead of four: assumed ~3x slower (75% parallel efficiency).
                "view_ms_1_thread_low": lo * 3,
                "view_ms_1_thread_high": hi * 3,
                "source": src,
            }
        )
    return rows


def run(host_view_ms: float | None = None) -> dict:
    if torch_available():
        macs = macs_of_model()
    else:  # the published count, when torch is not installed to count it
        macs = {"gmacs": 0.407, "conv_gmacs": None, "params_m": 4.7, "note": "published"}
    res = {
        "macs": macs,
        "mobilenet_v2_gmacs": MOBILENET_V2_GMACS,
        "estimates": estimate(macs["gmacs"]),
        "sources": SOURCES,
        "host_view_ms": host_view_ms,
    }
    print_table(
        "ESTIMATED EfficientNet-Lite0 int8 per view (4 threads)",
        ["board", "ms/view", "ms/query (3 views)"],
        [
            [
                r["board"],
                f"{r['view_ms_low']:.0f}-{r['view_ms_high']:.0f}",
                f"{r['query_ms_low']:.0f}-{r['query_ms_high']:.0f}",
            ]
            for r in res["estimates"]
        ],
    )
    return res


if __name__ == "__main__":
    save_results("boards", run())
