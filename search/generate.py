"""`gantune generate`: N synthetic images per class from a registered (or logged) generator.

The model's artifacts are downloaded, its checkpoint is read with torch.load(weights_only=True)
(through `load_generators` / `load_refiners`: networks rebuilt from their configs, never
unpickled). Images are drawn as the trial drew its synthetic images: through its
discriminator-score filter when it used one (`--no-filter` skips it) and its SimGAN refiners. They
are written as png / mha per image or one MedMNIST-layout npz, next to
`metadata.json` (model URI and version, run id, seed, counts, class names)."""

from __future__ import annotations

import argparse
import json
import pickle
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bars import progress_bar

FORMATS = ("png", "npz", "mha")


class GenerateError(ValueError):
    """A model URI that cannot be resolved or loaded, or bad options; the message names which."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model_uri", metavar="MODEL_URI", help="models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/generator"
    )
    p.add_argument("--num", type=int, required=True, help="images per class")
    p.add_argument("--out", required=True, help="output directory (created; must be empty unless --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier `gantune generate` output in --out (a folder with its metadata.json)")
    p.add_argument(
        "--format", choices=FORMATS, default="png", help="png / mha per image in OUT/<class>/, or one OUT/synthetic.npz"
    )
    p.add_argument("--seed", type=int, default=0, help="latent seed; class c samples with seed + c")
    p.add_argument("--no-filter", action="store_true",
                   help="skip the trial's discriminator-score filter (applied by default when the trial used one)")


@dataclass(frozen=True)
class ModelSource:
    """Where a model URI points in MLflow."""

    uri: str
    artifact_uri: str
    """What to download: the version's storage location, or the runs:/ URI itself."""
    run_id: str | None
    version: str | None
    name: str | None


def resolve_source(client, model_uri: str) -> ModelSource:
    """models:/NAME@ALIAS and models:/NAME/VERSION through the registry; runs:/ID/... directly."""
    from mlflow.exceptions import MlflowException

    registered = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))", model_uri)
    run = re.fullmatch(r"runs:/([^/]+)/.+", model_uri)
    try:
        if registered:
            name, alias, number = registered.groups()
            version = (
                client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
            )
            location = client.get_model_version_download_uri(name, version.version)
            return ModelSource(model_uri, location, version.run_id, str(version.version), name)
        if run:
            client.get_run(run.group(1))  # an unknown run is refused here, before any download
            return ModelSource(model_uri, model_uri, run.group(1), None, None)
    except MlflowException as exc:
        hint = registry_hint(client, *registered.groups()[:2]) if registered else ""
        raise GenerateError(f"cannot resolve {model_uri}: {exc.message}{hint}") from exc
    raise GenerateError(
        f"MODEL_URI must be models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/PATH, got {model_uri!r}"
    )


def registry_hint(client, name: str, alias: str | None) -> str:
    """What the registry does hold, for a model name or alias that is not there: the near name,
    or the model's aliases (with the near one)."""
    from mlflow.exceptions import MlflowException

    from .guards import did_you_mean

    try:
        aliases = client.get_registered_model(name).aliases or {}
    except MlflowException:
        names = sorted(m.name for m in client.search_registered_models())
        return f" (registered models: {', '.join(names) or 'none'}{did_you_mean(name, names)})"
    if alias is None:
        return ""
    held = ", ".join(f"@{a} (version {v})" for a, v in sorted(aliases.items())) or "none"
    return f" ({name}'s aliases: {held}{did_you_mean(alias, aliases)})"


def download_checkpoint(source: ModelSource, tracking_uri: str, dst: str) -> Path:
    """The weights-only checkpoint inside a downloaded generator model (path from its MLmodel)."""
    import mlflow.artifacts
    import yaml
    from mlflow.exceptions import MlflowException

    model_uri = source.uri
    try:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=source.artifact_uri, dst_path=dst, tracking_uri=tracking_uri
            )
        )
    except (MlflowException, OSError) as exc:
        raise GenerateError(f"cannot download {model_uri}: {exc}") from exc
    mlmodel = local / "MLmodel"
    if not mlmodel.exists():
        raise GenerateError(f"{model_uri} is not an MLflow model (no MLmodel file)")
    flavor = yaml.safe_load(mlmodel.read_text()).get("flavors", {}).get("python_function", {})
    checkpoint = flavor.get("artifacts", {}).get("checkpoint", {}).get("path")
    if not checkpoint:
        raise GenerateError(f"{model_uri}: no gantune generator checkpoint in its MLmodel artifacts")
    # The MLmodel file is as untrusted as the model: a crafted `../..` or absolute path (or a
    # symlink) must not make us read a file outside what was downloaded.
    root, path = local.resolve(), (local / checkpoint).resolve()
    if not path.is_relative_to(root):
        raise GenerateError(f"{model_uri}: its MLmodel's checkpoint path {checkpoint!r} points outside the "
                            "downloaded model; refusing to read it")
    if not path.is_file():
        raise GenerateError(f"{model_uri}: no gantune generator checkpoint in its MLmodel artifacts")
    return path


@dataclass
class Samples:
    images: dict[int, np.ndarray]
    """{class: (n, C, H, W) float32 in [-1, 1]}; n < num only when the filter passed too few."""
    class_names: tuple[str, ...]
    refined: bool
    filter_threshold: float
    """The discriminator-score threshold applied (0 = none)."""
    kept_fraction: dict[int, float]
    """Per class, the share of drawn images that passed the filter (empty without one)."""


def sample_classes(checkpoint: Path, num: int, seed: int, use_filter: bool = True) -> Samples:
    """num images per class, drawn as the trial drew its synthetic images: through the trial's
    discriminator-score filter (unless use_filter is False), then through its SimGAN refiners."""
    import torch

    from gantune.trainables.gans import FILTERS, load_generators, load_refiners

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    threshold = float(state.get("filter_threshold", 0.0)) if use_filter else 0.0
    gans, refiners = load_generators(str(checkpoint)), load_refiners(str(checkpoint))
    images, kept = {}, {}
    with torch.no_grad(), progress_bar(len(gans), "sample", "class") as bar:
        for label, gan in sorted(gans.items()):
            if threshold > 0:
                batch, kept[label] = FILTERS["d_score"](gan, num, threshold, seed + label)
            else:
                batch = gan.sample(num, seed=seed + label)
            if label in refiners and len(batch):
                batch = refiners[label].refine(batch)
            images[label] = batch.cpu().numpy().astype(np.float32)
            bar.update(1)
    return Samples(images, tuple(state["class_names"]), bool(refiners), threshold, kept)


def to_uint8(images: np.ndarray) -> np.ndarray:
    return np.round((np.clip(images, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def folder_name(label: int, class_names: tuple[str, ...]) -> str:
    name = class_names[label] if label < len(class_names) else f"class{label}"
    return f"{label}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}"


def write_per_image(out: Path, images: dict[int, np.ndarray], class_names: tuple[str, ...], fmt: str) -> list[str]:
    from gantune.trainables.data.io import write_chw

    files = []
    with progress_bar(sum(map(len, images.values())), "write", "image") as bar:
        for label, batch in images.items():
            folder = out / folder_name(label, class_names)
            for i, image in enumerate(batch):
                path = folder / f"{i:05d}.{fmt}"
                write_chw(path, image)  # png: uint8; mha: float32 values in [-1, 1]
                files.append(str(path.relative_to(out)))
                bar.update(1)
    return files


def write_npz(out: Path, images: dict[int, np.ndarray], class_names: tuple[str, ...]) -> list[str]:
    """MedMNIST layout (uint8 (N, H, W) or (N, H, W, 3), labels (N, 1)); every image in `train`,
    `val` and `test` empty, so `load_medmnist_npz` reads it back as a pool."""
    stacked = np.concatenate(list(images.values()))
    pixels = to_uint8(stacked[:, 0] if stacked.shape[1] == 1 else np.moveaxis(stacked, 1, -1))
    labels = np.concatenate([np.full(len(b), c, dtype=np.uint8) for c, b in images.items()]).reshape(-1, 1)
    empty_x, empty_y = pixels[:0], labels[:0]
    path = out / "synthetic.npz"
    np.savez_compressed(
        path, train_images=pixels, train_labels=labels, val_images=empty_x, val_labels=empty_y,
        test_images=empty_x, test_labels=empty_y, class_names=np.array(class_names),
    )
    return [path.name]


def generate(
    model_uri: str,
    num: int,
    out: str | Path,
    fmt: str = "png",
    seed: int = 0,
    tracking_uri: str | None = None,
    use_filter: bool = True,
    overwrite: bool = False,
) -> dict:
    """Write the images and metadata.json; returns the metadata. `out` must be empty or missing;
    with `overwrite`, an earlier generate output there is removed first."""
    import tempfile

    from mlflow.tracking import MlflowClient

    if num < 1:
        raise GenerateError(f"--num must be >= 1, got {num}")
    if fmt not in FORMATS:
        raise GenerateError(f"--format must be one of {FORMATS}, got {fmt!r}")
    source = resolve_source(MlflowClient(tracking_uri, registry_uri=tracking_uri), model_uri)
    out = Path(out)
    check_out(out, overwrite)  # before the download; the folder is made only once there are images
    with tempfile.TemporaryDirectory() as tmp:
        try:
            samples = sample_classes(download_checkpoint(source, tracking_uri, tmp), num, seed, use_filter)
        except pickle.UnpicklingError as exc:  # torch.load(weights_only=True) met a pickled object
            raise GenerateError(f"{model_uri}: its checkpoint holds pickled Python objects, which gantune never "
                                f"loads (weights only): {str(exc).splitlines()[0]}") from exc
    prepare_out(out, overwrite)
    images, class_names = samples.images, samples.class_names
    files = write_npz(out, images, class_names) if fmt == "npz" else write_per_image(out, images, class_names, fmt)
    metadata = {
        "model_uri": model_uri,
        "registered_model": source.name,
        "model_version": source.version,
        "run_id": source.run_id,
        "seed": seed,
        "format": fmt,
        "refined": samples.refined,
        "filter_threshold": samples.filter_threshold,
        "kept_fraction": {class_names[c]: round(f, 4) for c, f in samples.kept_fraction.items()},
        "class_names": list(class_names),
        "counts": {class_names[c] if c < len(class_names) else str(c): len(b) for c, b in images.items()},
        "image_shape": list(next(iter(images.values())).shape[1:]),
        "files": len(files),
    }
    (out / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    return metadata


def check_out(out: Path, overwrite: bool) -> None:
    """GenerateError unless `out` can be made empty: missing, empty, or (--overwrite) an earlier
    generate output. Old images beside new ones would leave metadata.json describing only some of
    the folder's files, so a non-empty folder is refused, and --overwrite removes only a folder
    that an earlier generate wrote (it has metadata.json), never an arbitrary one."""
    if out.exists() and not out.is_dir():
        raise GenerateError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise GenerateError(f"--out {out} is not empty ({sum(1 for _ in out.iterdir())} entries): pick an empty "
                                "folder, or pass --overwrite to replace an earlier `gantune generate` output")
        if not (out / "metadata.json").is_file():
            raise GenerateError(f"--out {out} is not empty and has no metadata.json, so it is not a `gantune generate` "
                                "output; --overwrite replaces only those: pick an empty folder")


def prepare_out(out: Path, overwrite: bool) -> None:
    """An empty `out` (check_out first): an earlier generate output removed with --overwrite."""
    import shutil

    check_out(out, overwrite)
    if out.is_dir() and any(out.iterdir()):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def generate_main(args) -> int:
    from gantune import api

    metadata = api.generate(args.model_uri, args.num, args.out, format=args.format, seed=args.seed,
                            tracking_uri=args.tracking_uri, use_filter=not args.no_filter,
                            overwrite=args.overwrite).metadata
    print(f"wrote {sum(metadata['counts'].values())} images ({metadata['counts']}) as {args.format} to {args.out}")
    short = {name: n for name, n in metadata["counts"].items() if n < args.num}
    if short:
        print(f"warning: the discriminator-score filter (threshold {metadata['filter_threshold']:g}) passed fewer than "
              f"--num images for {short}; --no-filter writes unfiltered samples", file=sys.stderr)
    return 0
