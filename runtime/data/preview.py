"""Preview: materialize the first items at any data node, and draw them as a contact sheet.

``preview(graph, node_id, n, registry)`` validates and runs only what the node
needs (the part of the graph upstream of it, so an unfinished training half
does not block it), evaluates its first ``n`` items and returns plain
records. The CLI's ``nodetrainer preview`` and the editor use the same function.
A node can be previewed when its outputs are sample fields, or a value that
offers ``as_fields()`` (a batch source, a concept).
"""

from __future__ import annotations

import math
import tempfile
import textwrap
from dataclasses import dataclass, field as _dc_field
from pathlib import Path
from typing import Any as _Any, Iterable

from .. import port_types
from ..errors import ValidationError
from ..graph import Graph
from .engine import Eval, Field, Preparer
from .item import SkipItem

IMAGE_TYPES = ("Image", "ImageTensor", "Mask")
#: what a record mainly shows, in the order a node's fields are tried
KINDS = ("image", "latent", "tokens", "other")
MAX_IDS_SHOWN = 80  # token ids listed with their pieces
MAX_CHANNELS = 16  # latent channels drawn
MAX_DECODE = 16 * 128 * 128  # latent elements decoded through a VAE (a 1024 px SD image)


@dataclass
class PreviewRecord:
    """One item as the preview shows it.

    ``kind`` says what the picture and text are: ``image`` (an image field or file), ``latent``
    (decoded through the VAE that made it, else its channels as grey images), ``tokens`` (no
    picture; ``text`` is what the ids decode to with the node's tokenizer) or ``other``.
    """

    index: int
    image: _Any = None  # PIL image, or None
    caption: str | None = None
    size: tuple[int, int] | None = None
    path: str | None = None
    #: every field of the node, as display text (tensors summarized)
    fields: dict[str, _Any] = _dc_field(default_factory=dict)
    #: why the item was skipped (bad data), or None
    error: str | None = None
    kind: str = "other"
    #: decoded token text, or None
    text: str | None = None
    #: the ids with their tokenizer pieces (bounded), or other detail of what is shown
    detail: str | None = None
    #: shape of the latent or token ids shown
    shape: tuple[int, ...] | None = None
    #: how the picture was made ("decoded by the VAE of 'encode_image'", "channels 0-3"), or None
    note: str | None = None

    @property
    def size_text(self) -> str:
        """``64x64`` for a picture's source size, ``4x32x32`` for a latent, ``77 ids`` for tokens, else ``?``."""
        if self.size:
            return f"{self.size[0]}x{self.size[1]}"
        if self.shape:
            if self.kind == "tokens":
                return f"{self.shape[-1]} ids" if len(self.shape) == 1 else "x".join(map(str, self.shape)) + " ids"
            return "x".join(map(str, self.shape))
        return "?"

    def to_dict(self) -> dict:
        return {"index": self.index, "kind": self.kind, "size": list(self.size) if self.size else None,
                "shape": list(self.shape) if self.shape else None, "size_text": self.size_text,
                "caption": self.caption, "text": self.text, "detail": self.detail, "note": self.note,
                "path": self.path, "error": self.error, "fields": self.fields}


def upstream_graph(graph: Graph, node_id: str) -> Graph:
    """The part of ``graph`` that ``node_id`` depends on (itself included)."""
    keep, stack = set(), [node_id]
    while stack:
        n = stack.pop()
        if n in keep or n not in graph.nodes:
            continue
        keep.add(n)
        stack.extend(link.node for _, link in graph.nodes[n].links())
    return Graph(name=graph.name, description=graph.description, inputs=dict(graph.inputs),
                 nodes={k: v for k, v in graph.nodes.items() if k in keep}, path=graph.path)


def _run_node(graph: Graph, node_id: str, registry, overrides, workspace, bus, cwd):
    from ..executor import OK, execute
    from ..overrides import parse_overrides
    from ..validate import validate

    sub = upstream_graph(graph, node_id)
    parsed, bad = parse_overrides(list(overrides))
    if bad:
        raise ValidationError(bad, "invalid --set")
    relevant = [o for o in parsed if o.node is None or o.node in sub.nodes]
    v = validate(sub, registry, relevant, cwd=cwd)
    # inputs only the rest of the graph uses are fine here
    v.problems = [p for p in v.problems if p.code not in ("unused_input", "no_sink")]
    if not v.ok:
        raise ValidationError(v.errors, f"cannot preview {node_id!r}: the nodes it needs have problems")
    result = execute(v, workspace=workspace, bus=bus, targets=(node_id,), keep=(node_id,), graph_name=graph.name)
    if result.error is not None:
        raise result.error
    if result.status != OK:
        raise RuntimeError(f"preview of {node_id!r} stopped ({result.status})")
    return result.outputs[node_id]


def _seed_for(graph: Graph, node_id: str, registry, overrides, cwd) -> int:
    """The seed a training run would use: that of a batches node reading from ``node_id``, else 0."""
    from ..validate import validate
    from .stages import BatchesStage

    full = validate(graph, registry, list(overrides), cwd=cwd)
    downstream, stack = set(), [node_id]
    while stack:
        n = stack.pop()
        for consumer, _, _ in graph.consumers(n):
            if consumer not in downstream:
                downstream.add(consumer)
                stack.append(consumer)
    for n in [node_id, *sorted(downstream)]:
        rn = full.nodes.get(n)
        if rn is not None and issubclass(rn.spec.cls, BatchesStage):
            seed = rn.params.get("seed")
            if isinstance(seed, int) and seed >= 0:
                return seed
    return 0


def node_fields(outputs: dict[str, _Any], port: str | None = None) -> dict[str, Field]:
    """The fields a node's outputs offer: sample outputs, or values with ``as_fields()``."""
    fields: dict[str, Field] = {}
    for name, value in outputs.items():
        if port is not None and name != port:
            continue
        if isinstance(value, Field):
            fields[name] = value
        elif hasattr(value, "as_fields"):
            fields.update(value.as_fields())
    return fields


def preview(graph: Graph, node_id: str, n: int = 8, registry=None, overrides: Iterable[str] = (), *,
            seed: int | None = None, epoch: int = 0, port: str | None = None, workspace: Path | None = None,
            bus=None, cwd: Path | None = None) -> list[PreviewRecord]:
    """The first ``n`` items at ``node_id`` (skipped items come back with ``error`` set)."""
    from ..events import EventBus
    from ..registry import default_registry

    registry = registry or default_registry()
    if node_id not in graph.nodes:
        from ..errors import Problem, did_you_mean

        raise ValidationError([Problem(f"no node {node_id!r}{did_you_mean(node_id, graph.nodes)}", code="unknown_node")],
                              "cannot preview")
    overrides = list(overrides)
    with tempfile.TemporaryDirectory(prefix="nodetrainer-preview-") as tmp:
        outputs = _run_node(graph, node_id, registry, overrides, workspace or Path(tmp), bus or EventBus(), cwd)
    fields = node_fields(outputs, port)
    if not fields:
        raise ValueError(f"node {node_id!r} has no sample outputs to preview"
                         + (f" (port {port!r})" if port else ""))
    if seed is None:
        seed = _seed_for(graph, node_id, registry, overrides, cwd)
    return materialize(fields, n, seed=seed, epoch=epoch)


def materialize(fields: dict[str, Field], n: int, *, seed: int = 0, epoch: int = 0) -> list[PreviewRecord]:
    """Evaluate the first ``n`` items of ``fields`` without filling caches."""
    prep = Preparer(seed, fill=False)
    prep.prepare_fields(fields.values(), epoch)
    ev = Eval(epoch, seed, fill=False)
    first = next(iter(fields.values()))
    extra = _source_caption(first)
    if extra is not None and not any(f.link == extra.link for f in fields.values()):
        fields = {**fields, SOURCE_CAPTION: extra}  # shown when the node's own caption is missing or empty
    records = []
    for i in range(min(n, len(first))):
        memo: dict = {}
        values: dict[str, _Any] = {}
        try:
            for name, f in fields.items():
                values[name] = f.get(ev, i, memo)
        except SkipItem as e:
            records.append(PreviewRecord(i, path=e.path or first.stage.describe_item(ev, i), error=e.reason,
                                         fields={k: display(v) for k, v in values.items()}))
            continue
        records.append(_record(i, fields, values, first.stage.describe_item(ev, i)))
    return records


SOURCE_CAPTION = "source caption"


def _source_caption(field: Field) -> Field | None:
    """The item's caption as its source gives it, for nodes that have no caption of their own."""
    space = field.space
    spec = getattr(type(space.node), "__node_spec__", None)
    merged = getattr(space, "field_types", {})  # a merge's fields are typed like its first branch's
    for name in getattr(space, "outputs", ()):
        out = spec.outputs.get(name) if spec else None
        if getattr(getattr(out, "type", None), "name", merged.get(name, "")) == "Caption":
            return Field(space, name, "Caption")
    return None


def _port_type(field: Field):
    """The PortType of ``field``'s output port, or None (a stage without a node spec)."""
    for _ in range(64):  # through caches, to the stage that made the field
        up = field.stage.source_of(field.port)
        if up is None:
            break
        field = up
    spec = getattr(type(field.stage.node), "__node_spec__", None)
    out = spec.outputs.get(field.port) if spec is not None else None
    return getattr(out, "type", None)


def _is(field: Field, type_name: str) -> bool:
    """``field`` is of the named built-in type or a subtype of it (third-party types inherit)."""
    wanted = getattr(port_types, type_name, None)
    t = _port_type(field)
    if t is not None and wanted is not None:
        return t.is_a(wanted)
    return field.type == type_name


def _value_behind(field: Field, type_name: str):
    """``(node_id, value)`` of the value input of type ``type_name`` (the tokenizer, the VAE) of the node
    that made ``field``, following stages that hand the field on (a cache); or None."""
    wanted = getattr(port_types, type_name)
    for _ in range(64):  # a chain of hand-ons is short; a cycle is impossible, but stay bounded
        stage = field.stage
        spec = getattr(type(stage.node), "__node_spec__", None)
        for port, decl in (spec.inputs.items() if spec is not None else ()):
            value = stage.values.get(port)
            if value is not None and decl.type.is_a(wanted):
                return stage.node_id, value
        up = stage.source_of(field.port) or stage.inputs.get(field.port)
        if not isinstance(up, Field):
            same = [f for f in stage.upstream() if f.type == field.type]
            up = same[0] if len(same) == 1 else None
        if up is None:
            return None
        field = up
    return None


def _record(i: int, fields: dict[str, Field], values: dict[str, _Any], path: str | None) -> PreviewRecord:
    rec = PreviewRecord(i, path=path, fields={k: display(v) for k, v in values.items()})
    ordered = sorted(fields, key=lambda k: not _is(fields[k], "Image") and not _is(fields[k], "Mask"))
    for name in ordered:
        if _is_tensor(values[name]) and not (_is(fields[name], "Image") or _is(fields[name], "Mask")):
            continue  # a text embedding is no picture
        img = as_pil(values[name])
        if img is not None:
            rec.image, rec.kind = img, "image"
            break
    if rec.image is None:
        for name, f in fields.items():
            if f.type == "ImagePath" and isinstance(values[name], str):
                rec.image = _thumb_from_file(values[name])
                if rec.image is not None:
                    rec.kind = "image"
                    break
    own = [values[k] for k, f in fields.items() if k != SOURCE_CAPTION and f.type == "Caption"]
    captions = [v for v in own if isinstance(v, str) and v]
    if captions:
        rec.caption = captions[0]
        rec.fields.pop(SOURCE_CAPTION, None)
    elif isinstance(values.get(SOURCE_CAPTION), str):
        rec.caption = values[SOURCE_CAPTION]
    elif own and isinstance(own[0], str):
        rec.caption = own[0]
    if rec.image is not None and not rec.size:
        rec.size = tuple(rec.image.info.get("source_size", rec.image.size))
    _show_latent(rec, fields, values)
    _show_tokens(rec, fields, values)
    if rec.size is None and rec.shape is None:
        for name, f in fields.items():
            v = values[name]
            if f.type == "Resolution" and isinstance(v, (tuple, list)) and len(v) == 2:
                rec.size = (int(v[0]), int(v[1]))
                break
    return rec


def _is_tensor(value: _Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "ndim")


def _show_latent(rec: PreviewRecord, fields: dict[str, Field], values: dict[str, _Any]) -> None:
    """A record without a picture shows its first latent: through its VAE, else as channel images."""
    if rec.image is not None:
        return
    for name, f in fields.items():
        z = values[name]
        if not (_is(f, "Latent") and _is_tensor(z)):
            continue
        rec.kind, rec.shape = "latent", tuple(int(d) for d in z.shape)
        behind = _value_behind(f, "VAE")
        why = "no VAE behind it"
        if behind is not None:
            try:
                rec.image = decode_latent(z, behind[1])
                rec.note = f"{name} decoded by the VAE of {behind[0]!r} ({rec.image.width}x{rec.image.height})"
            except Exception as e:  # a VAE that does not fit: show the channels and say why
                why = f"VAE decode failed: {type(e).__name__}: {str(e)[:160]}"
        if rec.image is None:
            rec.image = channel_image(z)
            shown = min(rec.shape[0], MAX_CHANNELS) if z.ndim == 3 else 1
            rec.note = f"{name}: channels 0-{shown - 1} as grey images ({why})"
        return


def _show_tokens(rec: PreviewRecord, fields: dict[str, Field], values: dict[str, _Any]) -> None:
    """Token ids come with the text they decode to (with the node's tokenizer) and their pieces."""
    for name, f in fields.items():
        ids = values[name]
        if not (_is(f, "TokenIds") and _is_tensor(ids)):
            continue
        if rec.kind == "other":
            rec.kind, rec.shape = "tokens", tuple(int(d) for d in ids.shape)
        behind = _value_behind(f, "Tokenizer")
        rec.text, rec.detail = token_text(ids, behind[1] if behind else None)
        return


def token_text(ids, tokenizer) -> tuple[str | None, str]:
    """``(decoded text, "n of N ids: id=piece ...")`` for 1-D token ids; text is None without a tokenizer.

    Trailing padding is left out of both (CLIP pads with its end token, which is kept once).
    """
    flat = [int(v) for v in ids.reshape(-1)[:4096].tolist()]
    tok = getattr(tokenizer, "tokenizer", tokenizer)
    used = len(flat)
    pad = getattr(tok, "pad_token_id", None) if tok is not None else None
    if pad is not None:
        while used and flat[used - 1] == pad:
            used -= 1
        if used < len(flat) and pad == getattr(tok, "eos_token_id", None):
            used += 1
    shown = flat[:min(used, MAX_IDS_SHOWN)]
    text, pieces = None, [str(v) for v in shown]
    if tok is not None and hasattr(tok, "decode"):
        try:
            text = str(tok.decode(flat[:used], skip_special_tokens=True)).strip()
            if hasattr(tok, "convert_ids_to_tokens"):
                pieces = [f"{v}={p}" for v, p in zip(shown, tok.convert_ids_to_tokens(shown))]
        except Exception as e:  # ids this tokenizer does not know: show them as numbers, say why
            text = f"(cannot decode with this tokenizer: {type(e).__name__}: {str(e)[:120]})"
    more = " ..." if used > len(shown) else ""
    return text, f"{used} of {ids.numel()} ids: " + " ".join(pieces) + more


def decode_latent(z, vae):
    """A PIL image of latent ``z`` (C x H x W, scaled as the encode node stored it) through ``vae`` (a value
    with a diffusers autoencoder as ``module`` and its ``scaling_factor``/``shift_factor``)."""
    import torch

    if z.ndim != 3 or z.numel() > MAX_DECODE:
        raise ValueError(f"latent {tuple(z.shape)} is not C x H x W of at most {MAX_DECODE} values")
    module = getattr(vae, "module", vae)
    config = getattr(module, "config", None)
    scale = getattr(vae, "scaling_factor", None) or getattr(config, "scaling_factor", None) or 1.0
    shift = getattr(vae, "shift_factor", None) or getattr(config, "shift_factor", None) or 0.0
    weight = next(module.parameters())
    with torch.no_grad():
        x = module.decode((z[None] / scale + shift).to(weight.device, weight.dtype)).sample[0]
    return _tensor01_to_pil(((x.float().cpu() + 1) / 2).clamp(0, 1))


def channel_image(z):
    """Latent channels side by side in a grid, each stretched to its own min..max, as one grey image."""
    import torch

    t = z.detach().float().cpu()
    t = t[None] if t.ndim == 2 else t.reshape(-1, *t.shape[-2:]) if t.ndim > 3 else t
    t = t[:MAX_CHANNELS]
    c, h, w = t.shape
    cols = math.ceil(math.sqrt(c))
    rows = math.ceil(c / cols)
    gap = max(1, min(h, w) // 16)
    grid = torch.full((1, rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap), 0.15)
    for k in range(c):
        ch = t[k]
        lo, hi = float(ch.min()), float(ch.max())
        ch = (ch - lo) / (hi - lo) if hi > lo else torch.full_like(ch, 0.5)
        r, q = divmod(k, cols)
        grid[0, r * (h + gap):r * (h + gap) + h, q * (w + gap):q * (w + gap) + w] = ch
    return _tensor01_to_pil(grid)


def _thumb_from_file(path: str, limit: int = 512):
    from PIL import Image, ImageOps

    from .pixels import to_rgb

    try:
        img = Image.open(path)
        img.draft("RGB", (limit, limit))
        img = ImageOps.exif_transpose(img)
        size = img.size
        img = to_rgb(img, (255, 255, 255))  # 16-bit and float files shown as training sees them
        img.thumbnail((limit, limit))
        img.info["source_size"] = size
        return img
    except Exception:
        return None


def as_pil(value: _Any):
    """A PIL image for display: PIL images as they are, CHW/HW tensors mapped to 0..255."""
    mod = type(value).__module__
    if mod.startswith("PIL."):
        return value
    if not (mod.startswith("torch") and hasattr(value, "ndim")):
        return None
    if value.ndim not in (2, 3) or (value.ndim == 3 and value.shape[0] not in (1, 3)):
        return None
    t = value.detach().float().cpu()
    if t.ndim == 2:
        t = t[None]
    if t.min() < -0.01:
        t = (t + 1) / 2
    return _tensor01_to_pil(t.clamp(0, 1))


def _tensor01_to_pil(t):
    """A 1- or 3-channel CHW tensor in 0..1 as a PIL image."""
    import torch
    from PIL import Image

    arr = (t * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    if arr.shape[2] == 1:
        return Image.frombytes("L", (arr.shape[1], arr.shape[0]), arr[..., 0].tobytes())
    return Image.frombytes("RGB", (arr.shape[1], arr.shape[0]), arr.tobytes())


def display(value: _Any) -> _Any:
    """A short, JSON-friendly description of a field value."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value if len(value) <= 300 else value[:297] + "..."
    if isinstance(value, (tuple, list)):
        if len(value) <= 8 and all(v is None or isinstance(v, (bool, int, float, str)) for v in value):
            return list(value)
        return f"{type(value).__name__} of {len(value)}"
    mod = type(value).__module__
    if mod.startswith("PIL."):
        return f"image {value.mode} {value.size[0]}x{value.size[1]}"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        shape = "x".join(str(s) for s in value.shape)
        try:
            lo, hi = float(value.min()), float(value.max())
            return f"tensor {shape} {str(value.dtype).replace('torch.', '')} [{lo:.3g}, {hi:.3g}]"
        except Exception:
            return f"tensor {shape} {value.dtype}"
    return type(value).__name__


def contact_sheet(records: list[PreviewRecord], thumb: int = 192, columns: int = 4, title: str = ""):
    """A PIL image: each record's picture with its index, size and caption underneath."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=12)
    line_h, pad, text_lines = 15, 8, 5
    cell_w, cell_h = thumb + 2 * pad, thumb + 2 * pad + line_h * (text_lines + 1)
    cols = max(1, min(columns, len(records) or 1))
    rows = max(1, math.ceil(len(records) / cols))
    head = line_h + pad if title else 0
    sheet = Image.new("RGB", (cols * cell_w, rows * cell_h + head), (32, 32, 36))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, pad // 2), title, fill=(230, 230, 230), font=font)
    chars = max(8, int(thumb / max(1.0, font.getlength("n"))))
    for k, rec in enumerate(records):
        x0, y0 = (k % cols) * cell_w, (k // cols) * cell_h + head
        box = (x0 + pad, y0 + pad, x0 + pad + thumb, y0 + pad + thumb)
        draw.rectangle(box, fill=(48, 48, 54))
        if rec.image is not None:
            img = rec.image.convert("RGB")
            scale = min(thumb / img.width, thumb / img.height)
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                             Image.Resampling.BICUBIC if scale < 1 else Image.Resampling.NEAREST)
            sheet.paste(img, (box[0] + (thumb - img.width) // 2, box[1] + (thumb - img.height) // 2))
        elif rec.detail:  # token ids: their pieces fill the picture's place
            for j, line in enumerate(textwrap.wrap(rec.detail, chars)[:thumb // line_h]):
                draw.text((box[0] + 2, box[1] + 2 + line_h * j), line, fill=(224, 200, 120), font=font)
        ty = y0 + pad + thumb + 4
        draw.text((x0 + pad, ty), f"#{rec.index}  {rec.size_text}", fill=(160, 200, 255), font=font)
        if rec.error:
            draw.rectangle(box, outline=(230, 60, 60), width=3)
            text, colour = f"skipped: {rec.error}", (255, 120, 120)
        else:
            text, colour = _item_text(rec), (230, 230, 230)
        for j, line in enumerate(textwrap.wrap(text, chars)[:text_lines]):
            draw.text((x0 + pad, ty + line_h * (j + 1)), line, fill=colour, font=font)
    return sheet


def _item_text(rec: PreviewRecord) -> str:
    """What a line or a cell says of an item: decoded tokens for token ids, else the caption."""
    if rec.kind == "tokens" and rec.text is not None:
        return rec.text
    return rec.caption if rec.caption is not None else ""


def write_contact_sheet(records: list[PreviewRecord], path: str | Path, **kwargs) -> Path:
    """Draw ``contact_sheet`` and save it atomically (format from the file extension)."""
    from ..fileio import atomic_path

    path = Path(path)
    sheet = contact_sheet(records, **kwargs)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(path.suffix.lower(), "PNG")
    with atomic_path(path) as tmp:
        sheet.save(tmp, format=fmt)
    return path


def cli_preview(args) -> int:
    """``nodetrainer preview GRAPH NODE [--n] [--out] [--set] [--seed] [--epoch] [--json]``; returns the exit code."""
    import json
    import sys

    from ..cli import EXIT_FAILED, EXIT_INVALID, EXIT_OK, _load, _print_problems
    from ..errors import GraphError, NodeFailure
    from ..events import safe_text
    from ..registry import default_registry
    from .item import DataStageError

    def err(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    if args.n < 1:
        err("--n must be at least 1")
        return EXIT_INVALID
    registry = default_registry()
    graph = _load(args.graph, registry)
    if graph is None:
        return EXIT_INVALID
    try:
        records = preview(graph, args.node, args.n, registry, args.sets, seed=args.seed, epoch=args.epoch)
    except GraphError as e:
        err(f"{args.graph}: {e.summary or 'invalid graph'}")
        _print_problems(e.problems)
        return EXIT_INVALID
    except (NodeFailure, DataStageError) as e:
        err(safe_text(str(e)))
        return EXIT_FAILED
    except ValueError as e:
        err(f"{args.graph}: {e}")
        return EXIT_INVALID
    if args.out:
        write_contact_sheet(records, args.out, title=f"{graph.name}: {args.node}")
    if args.json:
        print(json.dumps({"node": args.node, "items": [r.to_dict() for r in records],
                          "sheet": str(args.out) if args.out else None}, indent=2))
        return EXIT_OK
    for r in records:
        text = f"skipped: {r.error}" if r.error else _item_text(r)
        print(safe_text(f"#{r.index:<4} {r.size_text:>11}  {text}" + (f"  [{r.path}]" if r.error and r.path else "")))
    if args.out:
        print(f"contact sheet: {args.out}")
    return EXIT_OK
