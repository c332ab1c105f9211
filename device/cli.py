"""The `lensbox` command: build a bundle, search it, inspect it, serve it.

Each subcommand is a small function; heavy imports happen inside them so `lensbox --help`
answers instantly on a Pi.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from lensbox.device.api.server import add_serve
from lensbox.device.appliance.commands import add_config, add_deploy
from lensbox.device.capture.cli import add_kiosk
from lensbox.device.console import EXIT_FAIL, EXIT_OK, EXIT_USAGE, fail
from lensbox.device.console import error as console_error
from lensbox.device.live.edit import add_add, add_remove

# numpy's OpenBLAS on one thread (read when numpy first loads, which none of the imports
# above does): a query's vector products are small, and two BLAS threads per request
# fight the interpreters and the other requests for the cores; the exact scan of 100k
# vectors took 4.6 ms on one thread and 6.2 ms on two (2-core machine).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


# -- build --------------------------------------------------------------------------------
def add_build(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build",
        help="turn a folder of photos or a CSV/JSONL manifest into a bundle",
        description=(
            "Embed every photo of a catalog with the bundled int8 EfficientNet-Lite0 model and "
            "write a versioned bundle (manifest, SQLite metadata, int8 vectors, Annoy index). "
            "A folder gives one item per photo, id = file name without extension. A manifest "
            "(.csv or .jsonl) has a 'path' column and optional id, title, page_url, host, "
            "category_id (an integer or a name), tags (k=v;k2=v2), product_id, custom_content, "
            "adult, int_attr*, str_attr*; any other column is kept as a string attribute. "
            "Rows sharing an id become one item with several photos. Missing, unreadable and "
            "HEIC photos are skipped and listed (--strict: an error); embeddings are cached "
            "by content hash so a rebuild only embeds what changed."
        ),
    )
    p.add_argument("catalog", help="folder of photos, or a .csv / .jsonl manifest")
    p.add_argument(
        "-o", "--output", required=True, help="bundle directory to write (e.g. catalog.lbx)"
    )
    p.add_argument(
        "--dims",
        type=int,
        default=256,
        help="whitened descriptor size (default 256; 0 keeps the raw 1280-d GeM)",
    )
    p.add_argument(
        "--whiten-views",
        type=int,
        default=12,
        metavar="N",
        help="learn the whitening from N camera views rendered from each of up to 500 catalog "
        "photos (default 12: it makes real photos of an item find it far more often, "
        "docs/recognition.md; 0: PCA-whitening of the catalog alone, a faster build)",
    )
    p.add_argument("--pooling", choices=("gem", "avg"), default="gem", help="feature-map pooling")
    p.add_argument(
        "--views",
        default="full",
        help="comma-separated crops indexed per photo: full,center,tl,tr,bl,br (default full)",
    )
    p.add_argument(
        "--trees",
        type=int,
        default=None,
        help="Annoy trees (default: 16, or 32 above 300,000 vectors, where they find more of "
        "the exact nearest items in the same search time)",
    )
    p.add_argument(
        "--index-dims",
        type=int,
        default=48,
        help="dimensions of the PCA space the Annoy index is built in (default 48)",
    )
    p.add_argument(
        "--workers", type=int, default=0, help="embedding processes (default: one per core)"
    )
    p.add_argument(
        "--runtime", default="auto", choices=("auto", "ai-edge-litert", "tflite-runtime")
    )
    p.add_argument(
        "--no-cache", action="store_true", help="do not read or write the embedding cache"
    )
    p.add_argument(
        "--cache-dir", default=None, help="embedding cache folder (default ~/.cache/lensbox)"
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="fail (exit 1, nothing written) if any photo is skipped: missing, unreadable, HEIC",
    )
    p.add_argument(
        "--no-thumbnails",
        action="store_true",
        help="leave out the small JPEG per item (thumbs.sqlite, ~5 KB each) that lets a "
        "device show hits",
    )
    p.add_argument(
        "--local-features",
        type=int,
        default=1000,
        metavar="N",
        help="ORB keypoints kept per photo for verification and the visual-word channel "
        "(~40 bytes each; default 1000; 0: none, search by the global descriptor only)",
    )
    p.add_argument(
        "--no-calibrate",
        action="store_true",
        help="skip measuring the verdict thresholds on camera views of the catalog "
        "(a few seconds; without it the device uses generic thresholds)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_build)


def cmd_build(args: argparse.Namespace) -> int:
    from lensbox.index_builder.build import BuildError, BuildSettings, build_bundle
    from lensbox.index_builder.cache import default_cache_dir

    settings = BuildSettings(
        dims=args.dims,
        pooling=args.pooling,
        catalog_views=tuple(v.strip() for v in args.views.split(",") if v.strip()),
        trees=args.trees,
        index_dims=args.index_dims,
        workers=args.workers,
        runtime=args.runtime,
        cache_dir=None if args.no_cache else (args.cache_dir or str(default_cache_dir())),
        thumbnails=not args.no_thumbnails,
        local_features=max(0, args.local_features),
        calibrate=not args.no_calibrate,
        whiten_views=max(0, args.whiten_views),
    )
    try:
        report = build_bundle(
            args.catalog, args.output, settings, progress=not args.quiet, strict=args.strict
        )
    except (BuildError, ValueError) as exc:
        return fail(str(exc))
    print(f"wrote {args.output}: {report.summary()}")
    if report.categories:
        table = ", ".join(f"{name}={num}" for name, num in report.categories.items())
        print(f"categories (name=category_id): {table}")
    if report.extra_columns:
        cols = ", ".join(report.extra_columns)
        print(
            f"extra columns kept as string attributes: {cols} "
            f"(filter: lensbox search --where {report.extra_columns[0]}=VALUE)"
        )
    if report.skipped:
        print(
            f"skipped {len(report.skipped)} photo(s) (also in {args.output}/build_report.json; "
            "--strict makes this an error):",
            file=sys.stderr,
        )
        for skip in report.skipped:
            print(f"  {skip['error']}", file=sys.stderr)
    return EXIT_OK


# -- search -------------------------------------------------------------------------------
def add_search(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="find the catalog items that look like a photo",
        description=(
            "Embed QUERY with the same model and preprocessing as the build and print the best "
            "matches. Score is the cosine similarity of descriptors (0-1); see README 'Scores'."
        ),
    )
    p.add_argument("bundle", help="bundle directory written by `lensbox build`")
    p.add_argument("query", nargs="+", help="query photo(s), or folders of them")
    p.add_argument("-k", "--top-k", type=int, default=5, help="hits per query (default 5)")
    p.add_argument("--offset", type=int, default=0, help="skip this many hits (paging)")
    p.add_argument(
        "--region", default=None, help="search only this part of the photo: x,y,w,h in px"
    )
    p.add_argument("--views", default=None, help="query crops, e.g. full,center,subject (default)")
    p.add_argument(
        "--verify",
        type=int,
        default=None,
        metavar="N",
        help="check at most N shortlisted items by geometric verification (default: as "
        "`lensbox serve`, 20; 0: global descriptor only)",
    )
    p.add_argument(
        "--category", default=None, help="only items of this category (its id or its name)"
    )
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only items whose field, attribute or tag KEY equals VALUE (repeatable; "
        "e.g. --where price=9.99 for an extra manifest column)",
    )
    p.add_argument("--threads", type=int, default=2, help="inference threads (default 2)")
    p.add_argument(
        "--runtime", default="auto", choices=("auto", "ai-edge-litert", "tflite-runtime")
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_search)


def _parse_box(text: str | None):
    from lensbox.device.embedding.subject import Box

    if text is None:
        return None
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError as exc:
        raise ValueError(f"--region must be x,y,w,h in pixels, got {text!r}") from exc
    return Box(x, y, w, h)


def _query_paths(queries: list[str]) -> list[str]:
    """Each argument as given, except a folder: the photos in it (sorted, recursively)."""
    from pathlib import Path

    from lensbox.index_builder.catalog import IMAGE_SUFFIXES, UNSUPPORTED_SUFFIXES

    out: list[str] = []
    for query in queries:
        folder = Path(query)
        if not folder.is_dir():
            out.append(query)
            continue
        photos = sorted(
            str(p)
            for p in folder.rglob("*")
            if p.is_file()
            and p.suffix.lower() in IMAGE_SUFFIXES | UNSUPPORTED_SUFFIXES
            and not p.name.startswith(".")
        )
        if not photos:
            raise ValueError(
                f"{query}: a folder with no photos in it ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        out += photos
    return out


def _category_filter(text: str, manifest: dict) -> int:
    """``--category``: an integer id, or a name from the bundle's category table."""
    table = manifest.get("categories") or {}
    if text in table:
        return int(table[text])
    try:
        return int(text)
    except ValueError:
        known = ", ".join(table) or "none; the catalog gave only integer ids"
        raise ValueError(
            f"--category {text!r}: no such category in this bundle (names: {known})"
        ) from None


def _where_filter(conditions: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for cond in conditions:
        key, sep, value = cond.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--where must be KEY=VALUE, got {cond!r}")
        pairs.append((key.strip(), value.strip()))
    return pairs


def _field_value(item: dict, key: str) -> str | None:
    """A field, string/int attribute or tag of an item, as text (None: the item has none)."""
    for group in ("str_attrs", "int_attrs", "tags"):
        value = (item.get(group) or {}).get(key)
        if value is not None:
            return str(value)
    value = item.get(key)
    return None if value is None or isinstance(value, (dict, list)) else str(value)


def _predicate(category: int | None, where: list[tuple[str, str]]) -> Callable | None:
    if category is None and not where:
        return None

    def keep(item: dict) -> bool:
        if category is not None and item.get("category_id") != category:
            return False
        return all(_field_value(item, k) == v for k, v in where)

    return keep


def cmd_search(args: argparse.Namespace) -> int:
    import sqlite3

    from lensbox.device.bundle import BundleError
    from lensbox.device.features.rerank import RerankSettings
    from lensbox.device.imaging import ImageError
    from lensbox.device.live.catalog import open_catalog
    from lensbox.device.search.engine import SearchSettings

    try:
        settings = SearchSettings(
            query_views=tuple(args.views.split(",")) if args.views else SearchSettings.query_views,
            rerank=RerankSettings()
            if args.verify is None
            else RerankSettings(verify=max(0, args.verify)),
        )
        region = _parse_box(args.region)
        queries = _query_paths(args.query)
        where = _where_filter(args.where)
        catalog = open_catalog(args.bundle, settings, args.threads, args.runtime)
        manifest = catalog.bundle.manifest
        category = None if args.category is None else _category_filter(args.category, manifest)
    except (BundleError, ValueError, FileNotFoundError) as exc:
        return fail(str(exc))
    predicate = _predicate(category, where)
    names = {int(v): k for k, v in (manifest.get("categories") or {}).items()}
    failed = False
    results = []
    for query in queries:
        try:
            res = _search_file(catalog, query, args.top_k, args.offset, predicate, region)
        except (ImageError, ValueError) as exc:
            console_error(str(exc))
            failed = True
            continue
        except sqlite3.DatabaseError as exc:
            return fail(f"{args.bundle}: the bundle is damaged ({exc}); rebuild or redeploy it")
        if args.json:
            results.append(_result_json(query, res, names))
        else:
            _print_table(query, res)  # as each query finishes: a folder may be long
            sys.stdout.flush()
    if args.json:
        print(json.dumps(results, indent=2))
    return EXIT_FAIL if failed else EXIT_OK


def _search_file(catalog, path: str, top_k: int, offset: int, predicate, region):
    """catalog.search_image on a photo file, decoded as the daemon and the builder decode
    (at a reduced scale when it is large); ``region`` and every box, size and verified
    corner in the result are in the photo's own pixels."""
    import time

    from lensbox.device.imaging.decode import load_reduced
    from lensbox.device.imaging.frames import box_to_decoded, pipeline_sides, query_to_full
    from lensbox.device.search.engine import SearchResult

    local = catalog.engine.local
    long_side, short_side = pipeline_sides(local.settings if local else None)
    need = (region.width, region.height) if region is not None else None
    decoded = load_reduced(path, long_side=long_side, short_side=short_side, region=need)
    if not decoded.reduced:
        return catalog.search_image(decoded.rgb, top_k, offset, predicate, region)
    h, w = decoded.rgb.shape[:2]
    if region is not None:
        clipped = region.clip(*decoded.size)
        if clipped.width < 2 or clipped.height < 2:
            w_full, h_full = decoded.size
            raise ValueError(f"region {region} is outside the {w_full}x{h_full} image")
        region = clipped
    t0 = time.perf_counter()
    inner = box_to_decoded(region, decoded.scale, (w, h)) if region is not None else None
    query = query_to_full(catalog.embed_query(decoded.rgb, inner), decoded, region)
    t1 = time.perf_counter()
    hits, total = catalog.search_vectors(query.vectors, top_k, offset, predicate, local=query.local)
    timings = {"embed_ms": (t1 - t0) * 1e3, "search_ms": (time.perf_counter() - t1) * 1e3}
    return SearchResult(hits, total, query, timings)


def _result_json(query: str, res, categories: dict[int, str]) -> dict:
    return {
        "query": query,
        "total": res.total,
        "hits": [
            {
                "id": h.id,
                "score": h.score,
                "verdict": h.verdict,
                "inliers": h.inliers,
                "region": h.region,
                "title": h.item.get("title"),
                "source": h.item.get("source"),
                "category_id": h.item.get("category_id"),
                "category": categories.get(h.item.get("category_id")),
            }
            for h in res.hits
        ],
        "concepts": [c.name for c in res.query.concepts],
        "timings_ms": {k: round(v, 2) for k, v in res.timings.items()},
    }


def _print_table(query: str, res) -> None:
    concepts = ", ".join(c.name for c in res.query.concepts[:3]) or "-"
    print(
        f"{query}  (looks like: {concepts}; embed {res.timings['embed_ms']:.0f} ms, "
        f"search {res.timings['search_ms']:.1f} ms)"
    )
    print(f"  {'rank':>4}  {'score':>6}  {'verdict':<7}  {'id':<20} {'title':<28} source")
    for rank, hit in enumerate(res.hits, start=1):
        title = _clip(hit.item.get("title") or "", 28)
        print(
            f"  {rank:>4}  {hit.score:>6.3f}  {hit.verdict or '-':<7}  {hit.id:<20} "
            f"{title:<28} {hit.item.get('source') or ''}"
        )
    if not res.hits:
        print("  (no hits)")


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())  # a title with newlines or tabs would break the table
    return text if len(text) <= width else text[: width - 1] + "…"


# -- info ---------------------------------------------------------------------------------
def add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="show a bundle's manifest and whether this device can serve it",
        description=(
            "Print the bundle's manifest as JSON with a 'device' section: whether a TFLite "
            "runtime is installed, whether this lensbox's model is the one the bundle was "
            "built with (sha256), and a self-test (the model loads, a stored vector finds "
            "itself). The verdict goes to stderr; the exit code is 1 when this device cannot "
            "serve the bundle."
        ),
    )
    p.add_argument("bundle")
    p.add_argument(
        "--runtime", default="auto", choices=("auto", "ai-edge-litert", "tflite-runtime")
    )
    p.set_defaults(func=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    from lensbox.device.bundle import BundleError
    from lensbox.device.bundle.reader import read_manifest
    from lensbox.device.serving_check import check_serving

    try:
        manifest = read_manifest(args.bundle)
    except BundleError as exc:
        return fail(str(exc))
    report = check_serving(args.bundle, args.runtime, manifest=manifest)
    disk = sum(f.stat().st_size for f in Path(args.bundle).iterdir() if f.is_file())
    print(json.dumps({**manifest, "disk_bytes": disk, "device": report.as_json()}, indent=2))
    if not report.can_serve:
        return fail(f"{args.bundle}: {report.summary()}")
    print(f"{args.bundle}: {report.summary()}", file=sys.stderr)
    return EXIT_OK


# Subcommands register here; later stages (serve, ...) add their own `add_*` function.
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_build,
    add_search,
    add_info,
    add_kiosk,
    add_serve,
    add_config,
    add_deploy,
    add_add,
    add_remove,
]


def make_parser() -> argparse.ArgumentParser:
    from lensbox.device import __version__

    parser = argparse.ArgumentParser(
        prog="lensbox",
        description=(
            "On-device search by image. Build a bundle from a catalog of photos on a "
            "workstation, then search it on a Raspberry Pi or Jetson: from the command line, "
            "over a LAN HTTP API that speaks the Yandex, Alibaba, Huawei and Clarifai "
            "contracts, or from a camera triggered over a serial line."
        ),
        epilog="Run `lensbox COMMAND --help` for each command's options.",
    )
    parser.add_argument("--version", action="version", version=f"lensbox {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `lensbox search ... | head`: the reader left, not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
