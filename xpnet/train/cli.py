"""``xpnet train`` and ``xpnet eval``: the main job from the command line."""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time

DATASET_FORMS = ("mnist-sample", "mnist:DIR", "fashion-mnist:DIR", "cifar10:DIR", "cifar100:DIR",
                 "folder:DIR", "shards:PATTERN", "synthetic")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")


class UsageError(ValueError):
    """A mistake on the command line or in the data: printed in one or two lines."""


MAX_SEED = 2**32 - 1


def _number_type(kind, accepted, test):
    """An argparse type: ``kind`` (int or float) that passes ``test``; argparse turns the
    ArgumentTypeError into "argument --NAME: ..." and exit code 2."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {accepted}, got {text!r}") from None
        if (kind is float and not math.isfinite(value)) or not test(value):
            raise argparse.ArgumentTypeError(f"expected {accepted}, got {text!r}")
        return value

    parse.__name__ = accepted  # argparse names the type in its "invalid ... value" fallback
    return parse


positive_int = _number_type(int, "a positive integer", lambda v: v >= 1)
non_negative_int = _number_type(int, "a non-negative integer", lambda v: v >= 0)
seed_int = _number_type(int, f"an integer from 0 to {MAX_SEED}", lambda v: 0 <= v <= MAX_SEED)
positive_float = _number_type(float, "a positive finite number", lambda v: v > 0)
non_negative_float = _number_type(float, "a finite number >= 0", lambda v: v >= 0)
momentum_float = _number_type(float, "a number in [0, 1)", lambda v: 0 <= v < 1)


def _add_common(p):
    p.add_argument("--dataset", default="mnist-sample", help="one of: " + ", ".join(DATASET_FORMS))
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--backend", default=None, help="numpy | cupy | array_api_strict | torch | auto")
    p.add_argument("--device", default=None, help="e.g. 0, cuda:1, device1")
    p.add_argument("--image-size", type=positive_int, default=None,
                   help="input side for folder:/shards: datasets (default: the model's; training images get "
                        "RandomResizedCrop + flips, test images a resize and a center crop)")
    p.add_argument("--workers", type=non_negative_int, default=None,
                   help="DataLoader worker processes preparing batches (default: the CPUs this process may use, "
                        "minus one); datasets held in memory (MNIST, CIFAR, synthetic) are sliced in the main "
                        "process whatever this says")


def register_cli(sub):
    p = sub.add_parser("train", help="train a model (default: vgg_small on the embedded MNIST sample)")
    p.add_argument("--model", default="vgg_small")
    _add_common(p)
    p.add_argument("--decode-on-device", action="store_true",
                   help="folder: and shards: datasets: decode the JPEGs and crop, resize and flip them on the GPU "
                        "(nvImageCodec: pip install 'xpnet[images-gpu]'); no worker processes")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="total epochs (with --resume: the total to reach, not the number to add)")
    p.add_argument("--lr", type=positive_float, default=None)
    p.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS)
    p.add_argument("--momentum", type=momentum_float, default=0.9)
    p.add_argument("--weight-decay", type=non_negative_float, default=5e-4)
    p.add_argument("--scheduler", default="onecycle", choices=("onecycle", "cosine", "step", "none"))
    p.add_argument("--no-augment", action="store_true", help="turn off random crops/flips")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--out", default=None, help="output folder (default runs/<model>-<dataset>; an earlier run "
                   "there is never overwritten: the next free name DIR-2, DIR-3, ... is used)")
    p.add_argument("--overwrite", action="store_true", help="replace the files of an earlier run in --out")
    p.add_argument("--resume", default=None, help="continue from a checkpoint written by xpnet train "
                   "(in its own folder unless --out is given)")
    p.add_argument("--limit-batches", type=positive_int, default=None, help="at most this many batches per epoch")
    p.add_argument("--synthetic-size", type=positive_int, default=None, help="images per synthetic split")
    p.set_defaults(func=cmd_train)
    e = sub.add_parser("eval", help="evaluate a checkpoint on a dataset's test split")
    e.add_argument("checkpoint")
    _add_common(e)
    e.set_defaults(func=cmd_eval)


# ----------------------------------------------------------------------------------- data sets
def _synthetic(path, input_shape=(1, 28, 28), size=512, seed=0):
    from .. import data

    return data.synthetic_splits(input_shape, size, seed)


def is_image_files(spec) -> bool:
    """Whether ``spec`` names decoded image files (``folder:``, ``shards:``): those get ImageNet's
    per-image augmentation (``image_transforms``), not the in-memory sets' batch crops."""
    return spec.strip().lower().startswith(("folder", "shards"))


def image_transforms(side, augment):
    """ImageNet training's per-image transforms for ``side``-pixel inputs: RandomResizedCrop and a
    horizontal flip for training (a resize to the side only, without ``augment``); the test split
    resized to side * 256 / 224 and center-cropped, as the ImageNet models are evaluated."""
    from ..data import augment as aug

    train = aug.Compose([aug.RandomResizedCrop(side), aug.RandomHorizontalFlip()]) if augment else aug.Compose(
        [aug.Resize((side, side))])
    test = aug.Compose([aug.Resize(round(side * 256 / 224)), aug.CenterCrop(side)])
    return train, test


def load_splits(spec, model_name="vgg_small", synthetic_size=None, image_size=None, seed=0, augment=False):
    """``data.DatasetSplits`` for a dataset spec (``synthetic`` takes the model's input shape; image
    files are decoded at ``image_size``, the model's input size by default, see image_transforms)."""
    from .. import data
    from ..models import default_input_size

    options = {}
    if spec.strip().lower() == "synthetic":
        side = image_size or default_input_size(model_name)
        channels = 1 if model_name in ("mlp", "lenet5", "vgg_small") else 3
        options = {"input_shape": (channels, side, side), "size": synthetic_size or 512, "seed": seed}
    elif is_image_files(spec):
        train, test = image_transforms(image_size or default_input_size(model_name), augment)
        options = {"transform": train, "test_transform": test}
    try:
        splits = data.load_dataset(spec, **options)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    if splits.test is None:
        raise UsageError(f"dataset {spec!r} has no test split")
    return splits


def _transforms(train_dataset, augment):
    """Train and test transforms: to float, normalise with the training set's channel statistics,
    and (train only) random crops, plus horizontal flips for colour images."""
    from .. import data

    scale, mean, std = data.channel_stats(train_dataset)
    base = [data.ToFloat(scale), data.Normalize(mean, std)]
    train = list(base)
    if augment:
        channels, side = len(mean), data.input_shape_of(train_dataset)[-1]
        train.append(data.RandomCrop(side, padding=max(2, side // 8)))
        if channels == 3:
            train.append(data.RandomHorizontalFlip())
    return data.Compose(train), data.Compose(base)


def default_workers() -> int:
    """The CPUs this process may use, minus one for the training loop itself (at least 0)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(0, cpus - 1)


def loader_options(args) -> dict:
    """The DataLoader worker options of ``--workers`` (persistent workers: no restart per epoch)."""
    workers = default_workers() if args.workers is None else args.workers
    return {"num_workers": workers, "persistent_workers": workers > 0}


def device_decode_options(host_transform):
    """The DataLoader options of ``--decode-on-device``: no host batch transform, its
    normalisation (``ToFloat(scale)`` then ``Normalize(mean, std)``) as ``NormalizeOnDevice``."""
    from .. import data

    steps = {type(t).__name__: t for t in host_transform.transforms}
    to_float, normalize = steps["ToFloat"], steps["Normalize"]
    return {"device_transform": data.NormalizeOnDevice(normalize.mean, normalize.std, scale=to_float.scale),
            "decode_on_device": True}


def _register_synthetic():
    from .. import data

    data.register_dataset("synthetic", _synthetic, form="synthetic", needs_path=False)


# ------------------------------------------------------------------------------------- commands
_DEFAULTS = {  # (epochs, batch size, lr) per optimizer family
    "sgd": (8, 64, 0.05), "adam": (8, 64, 2e-3), "adamw": (8, 64, 2e-3), "rmsprop": (8, 64, 1e-3),
    "adagrad": (8, 64, 0.02),
}


def _make_optimizer(name, params, lr, momentum, weight_decay):
    from .. import optim

    if name == "sgd":
        return optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0)
    if name == "adam":
        return optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return optim.AdamW(params, lr=lr, weight_decay=weight_decay or 0.01)
    if name == "rmsprop":
        return optim.RMSprop(params, lr=lr, weight_decay=weight_decay)
    return optim.Adagrad(params, lr=lr, weight_decay=weight_decay)


def _make_scheduler(name, optimizer, lr, epochs, steps_per_epoch):
    from ..optim import lr_scheduler

    if name == "onecycle":
        return lr_scheduler.OneCycleLR(optimizer, max_lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch,
                                       cycle_momentum=False)
    if name == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if name == "step":
        return lr_scheduler.StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1)
    return None


def check_model_fits(model, sample_shape, model_name):
    """Run one sample through the model before training: a misfit names both shapes."""
    import xpnet

    with xpnet.no_grad():
        model.eval()
        try:
            model(xpnet.zeros(1, *sample_shape))
        except (ValueError, TypeError) as exc:
            expected = getattr(model, "input_shape", None)
            raise UsageError(f"model {model_name!r} expects input {tuple(expected) if expected else '?'} but "
                             f"the dataset gives images of shape {tuple(sample_shape)}: {exc}") from None
        finally:
            model.train()


def _select_backend(args):
    import xpnet

    if args.backend or args.device:
        xpnet.set_backend(args.backend or xpnet.get_backend().name, args.device)
    return xpnet.get_backend()


class _SigtermGuard:
    """While active, SIGTERM raises TrainingTerminated in the main thread, so ``fit`` saves an
    interrupted checkpoint as for Ctrl-C (schedulers and batch systems send SIGTERM)."""

    def __enter__(self):
        from .loop import TrainingTerminated

        def handler(signum, frame):
            raise TrainingTerminated("SIGTERM")

        self.previous = None
        try:
            self.previous = signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread: leave SIGTERM as it is
            pass
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


def _resume_header(path, model_name):
    """The resumed checkpoint's header, checked against --model before any data is read."""
    from .checkpoint import CheckpointError, read_checkpoint_header

    try:
        header, _ = read_checkpoint_header(path)
    except CheckpointError as exc:
        raise UsageError(f"--resume: {exc}") from None
    if header["model"]["name"] != model_name:
        raise UsageError(f"checkpoint {path!r} holds model {header['model']['name']!r}, "
                         f"not {model_name!r}; pass --model {header['model']['name']}")
    return header


# ----------------------------------------------------------------------------- many processes
# (rank, size) variables of the MPI launchers: MPICH/Intel MPI (hydra), Open MPI, PMIx (srun)
_LAUNCHER_VARIABLES = (("PMI_RANK", "PMI_SIZE"), ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
                       ("PMIX_RANK", "SLURM_NTASKS"))


def launched_world(environ=None) -> tuple:
    """(rank, world size) that an MPI launcher (``mpiexec -n N``) gave this process through its
    environment, else (0, 1). Nothing MPI is imported: a plain run stays a plain run."""
    environ = os.environ if environ is None else environ
    for rank_key, size_key in _LAUNCHER_VARIABLES:
        if rank_key in environ and size_key in environ:
            try:
                rank, size = int(environ[rank_key]), int(environ[size_key])
            except ValueError:
                continue
            if size >= 1 and 0 <= rank < size:
                return rank, size
    return 0, 1


def _distributed_started() -> bool:
    dist = sys.modules.get("xpnet.distributed")
    return dist is not None and dist.is_initialized()


def _abort_job(exc, rank, world):
    """Print ``exc`` as ``xpnet`` would, then end every rank of the job with its exit code: the
    other ranks may be waiting in a collective for this one and would otherwise hang."""
    from ..cli import describe_error

    if isinstance(exc, KeyboardInterrupt):
        code, text = 130, "xpnet: interrupted"
    else:
        code, text = describe_error(exc)
    if text.startswith("xpnet:"):
        text = f"xpnet: rank {rank} of {world}:" + text[len("xpnet:"):]
    print(text, file=sys.stderr, flush=True)
    sys.stdout.flush()
    time.sleep(0.5)  # let the launcher carry the message before the job ends
    try:
        from mpi4py import MPI

        MPI.COMM_WORLD.Abort(code)
    finally:
        os._exit(code)


def cmd_train(args) -> int:
    """``xpnet train``; under ``mpiexec -n N`` (N > 1) the N processes train one model data-parallel:
    the global ``--batch-size`` is split over the ranks, rank 0 alone prints and writes the run."""
    rank, world = launched_world()
    if world == 1:
        return _train(args, 0, 1)
    batch = _DEFAULTS[args.optimizer][1] if args.batch_size is None else args.batch_size
    if batch % world:
        if rank != 0:
            raise SystemExit(2)  # rank 0 says why
        raise UsageError(f"--batch-size {batch} is the global batch, split over the {world} processes of the "
                         f"MPI launcher, and {batch} is not divisible by {world}; give a multiple of {world}")
    try:
        return _train(args, rank, world)
    except (Exception, KeyboardInterrupt) as exc:
        if not _distributed_started():  # refused before the group started: the same on every rank
            if rank != 0:
                raise SystemExit(2 if isinstance(exc, (UsageError, ValueError)) else 1) from None
            raise
        _abort_job(exc, rank, world)


def _train(args, rank, world) -> int:
    import xpnet

    _register_synthetic()
    from .. import data, models, nn
    from .loop import fit
    from .plots import plot_history
    from .rundir import choose_run_dir, prepare_run_dir

    backend = _select_backend(args)
    xpnet.manual_seed(args.seed)
    epochs_d, batch_d, lr_d = _DEFAULTS[args.optimizer]
    epochs = epochs_d if args.epochs is None else args.epochs
    batch_size = batch_d if args.batch_size is None else args.batch_size
    lr = lr_d if args.lr is None else args.lr
    if args.model not in models.list_models():
        raise UsageError(f"unknown model {args.model!r}; available: {', '.join(models.list_models())}")
    if args.resume:
        header = _resume_header(args.resume, args.model)
        if int(header["epoch"]) >= epochs:
            raise UsageError(f"--epochs {epochs} is the total to reach, but checkpoint {args.resume!r} already "
                             f"holds {header['epoch']} epoch(s); give --epochs larger than {header['epoch']}")
    lead = rank == 0

    def say(*parts, **options):  # rank 0 alone prints
        if lead:
            print(*parts, **options)

    if world > 1:
        import xpnet.distributed as dist

        dist.init_process_group()
        if dist.get_world_size() != world:
            raise UsageError(f"the MPI launcher's environment says {world} processes but MPI has "
                             f"{dist.get_world_size()}")
    if args.decode_on_device and not is_image_files(args.dataset):
        raise UsageError(f"--decode-on-device decodes image files (folder:DIR, shards:PATTERN); got --dataset "
                         f"{args.dataset!r}")
    augment = not args.no_augment and args.dataset != "synthetic"
    splits = load_splits(args.dataset, args.model, args.synthetic_size, args.image_size, args.seed, augment)
    num_classes, sample_shape = splits.num_classes, tuple(splits.input_shape)
    in_channels, side = sample_shape[0], sample_shape[-1]
    try:
        model = models.create(args.model, num_classes=num_classes, in_channels=in_channels, input_size=side)
    except ValueError as exc:
        raise UsageError(f"model {args.model!r} cannot take the dataset's images of shape "
                         f"{sample_shape}: {exc}") from None
    check_model_fits(model, sample_shape, args.model)
    if world > 1:  # fit wraps it in DistributedDataParallel; BatchNorm statistics over the global batch
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # image files were augmented per image as they were decoded (image_transforms)
    train_tf, test_tf = _transforms(splits.train, augment=augment and not is_image_files(args.dataset))
    # a prefetch thread pays off when compute runs on a GPU; on a CPU it competes for the cores
    prefetch = 2 if backend.name == "cupy" or str(backend.device).startswith("cuda") else 0
    workers = loader_options(args)
    train_options, test_options = {"transform": train_tf}, {"transform": test_tf}
    if args.decode_on_device:  # the same normalisation, on the device after the decoding
        train_options = test_options = device_decode_options(train_tf)
        workers = {}
    if world > 1:  # this rank's shard, batch_size / world of each global batch; fit calls set_epoch
        sampler = data.DistributedSampler(splits.train, num_replicas=world, rank=rank, shuffle=True,
                                          seed=args.seed, drop_last=True)
        train_loader = data.DataLoader(splits.train, batch_size=batch_size // world, sampler=sampler,
                                       drop_last=True, seed=args.seed, prefetch=prefetch, **train_options, **workers)
        # every test image once over all ranks: evaluate sums the counts over the ranks
        test_set = data.Subset(splits.test, range(rank, len(splits.test), world))
    else:
        train_loader = data.DataLoader(splits.train, batch_size=batch_size, shuffle=True, drop_last=True,
                                       seed=args.seed, prefetch=prefetch, **train_options, **workers)
        test_set = splits.test
    test_loader = data.DataLoader(test_set, batch_size=256, seed=args.seed, prefetch=prefetch, **test_options,
                                  **workers)
    if len(train_loader) == 0:
        raise UsageError(f"--batch-size {batch_size} is larger than the training split of {args.dataset} "
                         f"({len(splits.train)} images): no full batch per epoch; lower --batch-size")
    steps = len(train_loader) if args.limit_batches is None else min(len(train_loader), args.limit_batches)
    optimizer = _make_optimizer(args.optimizer, model.parameters(), lr, args.momentum, args.weight_decay)
    scheduler = _make_scheduler(args.scheduler, optimizer, lr, epochs, steps)
    # the output folder last: every check above needs no disk, and a refused run leaves nothing behind
    if args.out is not None:
        wanted = args.out
    elif args.resume:
        wanted = os.path.dirname(os.path.abspath(args.resume))
    else:
        wanted = os.path.join("runs", f"{args.model}-{args.dataset.split(':')[0]}")
    out = None
    if lead:  # rank 0 decides the run folder; the other ranks never touch it
        out, note = choose_run_dir(wanted, resume=args.resume, overwrite=args.overwrite)
        cleaned = prepare_run_dir(out)
        if note:
            print(f"xpnet train: {note}", flush=True)
        if cleaned:
            print(f"xpnet train: removed {len(cleaned)} temporary file(s) an interrupted save left in {out}",
                  flush=True)
    if world > 1:
        box = [out]
        dist.broadcast_object_list(box, src=0)
        out = box[0]
    params = sum(p.numel() for p in model.parameters())
    ranks = f" ({world} processes x {batch_size // world})" if world > 1 else ""
    say(f"xpnet train: {args.model} ({params:,} parameters) on {args.dataset} "
        f"({len(splits.train)} train / {len(splits.test)} test images of {sample_shape}), backend {backend}, "
        f"{args.optimizer} lr {lr:g}, batch {batch_size}{ranks}, {epochs} epochs, output {out}", flush=True)
    started = time.perf_counter()
    with _SigtermGuard():
        try:
            history = fit(model, train_loader, test_loader, optimizer, nn.CrossEntropyLoss(), epochs,
                          scheduler=scheduler, checkpoint_dir=out, resume=args.resume,
                          max_steps_per_epoch=args.limit_batches, stream=sys.stdout if lead else None,
                          progress=None if lead else False)
        finally:
            train_loader.close()  # the persistent workers
            test_loader.close()
    took = time.perf_counter() - started
    if not lead:  # the same outcome as rank 0's, which writes and reports it
        return (143 if history.signal == "SIGTERM" else 130) if history.interrupted else 0
    csv_path = history.to_csv(os.path.join(out, "history.csv"))
    plot = plot_history(history, os.path.join(out, "curves.png")) if history["epoch"] else None
    if history.interrupted:
        code = 143 if history.signal == "SIGTERM" else 130
        if history.unsaved_reason:
            print(f"interrupted ({history.signal}): {history.unsaved_reason}"
                  + (f"; the last good checkpoint is {history.checkpoint_path}" if history.checkpoint_path else ""))
        else:
            print(f"interrupted ({history.signal}): checkpoint saved to {history.checkpoint_path} "
                  f"(resume with --resume {history.checkpoint_path})")
        return code
    final = history["val_acc"][-1] if history["val_acc"] else float("nan")
    print(f"test accuracy {100 * final:.2f}% on {len(splits.test)} held-out images after {took:.1f}s")
    print(f"checkpoint: {history.checkpoint_path}")
    print(f"history: {csv_path}")
    if plot:
        print(f"plot: {plot}")
    return 0


def cmd_eval(args) -> int:
    import xpnet

    _register_synthetic()
    from .. import data, models
    from .checkpoint import load_checkpoint, read_checkpoint_header
    from .metrics import confusion_matrix, correct_count, top_k_correct

    _select_backend(args)
    header, _ = read_checkpoint_header(args.checkpoint)
    name, options = header["model"]["name"], dict(header["model"].get("options") or {})
    if name not in models.list_models():
        raise UsageError(f"checkpoint {args.checkpoint!r} holds model {name!r}, which this xpnet does not know")
    splits = load_splits(args.dataset, name, None, args.image_size)
    num_classes = splits.num_classes
    trained_classes = options.get("num_classes", num_classes)
    if trained_classes != num_classes:
        raise UsageError(f"checkpoint {args.checkpoint!r} was trained for {trained_classes} classes, but "
                         f"{args.dataset} has {num_classes}; evaluate it on a dataset with the same classes")
    model = models.create(name, **options)
    load_checkpoint(args.checkpoint, model, restore_rng=False)
    check_model_fits(model, tuple(splits.input_shape), name)
    _, test_tf = _transforms(splits.train, augment=False)
    loader = data.DataLoader(splits.test, batch_size=args.batch_size or 256, seed=0, transform=test_tf,
                             num_workers=loader_options(args)["num_workers"])
    model.eval()
    correct = top5 = seen = 0
    preds, targets = [], []
    with xpnet.no_grad():
        for xb, yb in loader:
            out = model(xb)
            correct += correct_count(out.data, yb.data)
            top5 += top_k_correct(out.data, yb.data, 5)
            seen += yb.shape[0]
            preds.append(xpnet.argmax(out, axis=-1))
            targets.append(yb)
    cm = xpnet.to_numpy(confusion_matrix(xpnet.concat(preds).data, xpnet.concat(targets).data, num_classes))
    print(f"{name} from {args.checkpoint} (epoch {header['epoch']}) on {args.dataset}: "
          f"accuracy {100 * correct / seen:.2f}%  top-5 {100 * top5 / seen:.2f}%  ({seen} images)")
    print("confusion matrix (rows: true class, columns: predicted):")
    width = max(len(str(int(v))) for v in cm.ravel())
    for row in cm.tolist():
        print("  " + " ".join(str(int(v)).rjust(width) for v in row))
    return 0


def main_with_defaults(defaults: dict, argv=None) -> int:
    """``xpnet train`` with other defaults (the example scripts): options in ``argv`` win."""
    from ..cli import main

    argv = list(sys.argv[1:] if argv is None else argv)
    given = {a.split("=")[0] for a in argv if a.startswith("--")}
    extra = []
    for flag, value in defaults.items():
        if flag not in given:
            extra += [flag, str(value)]
    return main(["train", *extra, *argv])
