"""``nprnn train | eval | generate | import-book | export``: language models on the command line.

Parsing and printing only: the work is done by ``nprnn.training`` (train), ``nprnn.models`` (eval,
generate), ``nprnn.interop`` (import-book, export), imported when a command runs.
"""

import argparse
import os
import sys
from pathlib import Path

from nprnn.cli.args import count, factor, nonnegative_real, positive, positive_real, probability
from nprnn.training.presets import OPTIMIZER_NAMES, PRESETS, SCHEDULES

MODEL_OPTIONS = {  # option -> LMConfig field
    "--cell": "cell", "--embed": "embed", "--hidden": "hidden", "--layers": "layers", "--dropout": "dropout",
    "--tie": "tie_weights", "--init": "init", "--init-scale": "init_scale",
}  # fmt: skip
TRAIN_OPTIONS = (
    "epochs", "batch_size", "bptt", "optimizer", "lr", "max_grad", "schedule", "decay", "decay_start",
    "eval_batch_size", "eval_bptt", "seed", "save_every", "max_batches",
)  # fmt: skip


def _option(name):
    return "--" + name.replace("_", "-")


# ---------------------------------------------------------------- train


def cmd_train(args):
    import numpy as np

    from nprnn.data.corpus import load_corpus
    from nprnn.models.lm import LanguageModel, LMConfig
    from nprnn.training.distributed import abort_on_error, mpi_world
    from nprnn.training.lm import LMTrainer, TrainConfig
    from nprnn.training.presets import split_preset

    comm = mpi_world()  # None unless started by mpiexec with more than one process
    root = comm is None or comm.Get_rank() == 0
    say = print if root else (lambda *a, **k: None)
    out_dir = Path(args.out) if args.out else Path("runs") / _run_name(args)
    checkpoint = out_dir / "checkpoint.npz"
    data_path = None if args.data is None else str(Path(args.data).resolve())
    trainer_args = dict(progress_bar=not args.no_progress, log_format=args.log_format or "jsonl", comm=comm)
    if args.resume:
        trainer, corpus, changes = _resume(args, checkpoint, out_dir, data_path, trainer_args)
        model, p = trainer.model, trainer.progress
        say(
            f"resuming {checkpoint} at epoch {p.epoch + 1}, iteration {p.iteration} (step {p.step})"
            + (f"; changed: {', '.join(changes)}" if changes else "")
        )
    else:
        if args.force is False and checkpoint.exists():
            raise ValueError(f"{checkpoint} exists: pass --resume to continue it, or --force to start over")
        model_settings, train_settings, level = split_preset(
            args.preset or "tiny",
            {**{f: getattr(args, f) for f in MODEL_OPTIONS.values()}, **{k: getattr(args, k) for k in TRAIN_OPTIONS}},
        )
        level = args.level or level
        corpus = load_corpus(args.data, level=level, max_vocab=args.max_vocab)
        config = TrainConfig(**train_settings).validate()
        model = LanguageModel(
            LMConfig(vocab_size=len(corpus.vocab), **model_settings),
            seed=config.seed,
            dtype=np.dtype(args.dtype or "float32"),
        )
        trainer = LMTrainer(model, corpus, config, out_dir, overwrite=bool(args.force), **trainer_args)
        trainer.extra_meta.update(data=data_path, preset=args.preset or "tiny", max_vocab=args.max_vocab)

    c, m = trainer.config, model.config
    n_params = sum(p.size for p in model.params)
    say(f"data: {corpus}")
    say(
        f"model: {m.cell} {m.layers}x{m.hidden}, embed {m.embed}, dropout {m.dropout}, tied {m.tie_weights}; "
        f"{n_params:,} parameters ({model.params[0].dtype})"
    )
    say(
        f"training: {c.epochs} epochs x {trainer.iters_per_epoch} batches of {c.batch_size}x{c.bptt}, "
        f"{c.optimizer} lr {c.lr}, clip {c.max_grad or 'off'}, schedule {c.schedule}"
        + (f" (decay {c.decay})" if c.schedule in ("plateau", "step") else "")
        + f", seed {c.seed}"
    )
    say(f"output: {out_dir}/")
    if comm is None:
        trainer.run()
    else:
        say(f"data parallel: {comm.Get_size()} MPI ranks, each on its share of the {c.batch_size} rows of a batch")
        with abort_on_error(comm):
            trainer.run()
        if not root:
            return 0
    _report_best(out_dir, trainer, args)
    return 0


def _resume(args, checkpoint, out_dir, data_path, trainer_args):
    """Rebuild the run in ``out_dir`` from its checkpoint: refuse options that would change its model,
    data or random streams, apply the safe ones. Returns ``(trainer, corpus, changes shown)``."""
    from nprnn.data.corpus import load_corpus
    from nprnn.models.io import load_lm
    from nprnn.training import lm
    from nprnn.training.loop import SAFE_ON_RESUME, open_resume, refuse_changes

    model, vocab, arrays, meta, config = open_resume(checkpoint, load_lm, lm.TrainConfig, args.force)
    saved_model = model.config.to_dict()
    fixed = {option: (getattr(args, field), saved_model[field]) for option, field in MODEL_OPTIONS.items()}
    fixed.update(
        {_option(k): (getattr(args, k), getattr(config, k)) for k in ("batch_size", "bptt", "optimizer", "seed")}
    )
    fixed.update({
        "--level": (args.level, vocab.level), "--dtype": (args.dtype, str(model.params[0].dtype)),
        "--data": (data_path, meta.get("data")), "--preset": (args.preset, meta.get("preset")),
        "--max-vocab": (args.max_vocab, meta.get("max_vocab")),
    })  # fmt: skip
    refuse_changes(fixed, out_dir)
    # Rebuilt as the run built it (capping at the checkpoint's size keeps the same most frequent
    # tokens), the data's vocabulary must be the checkpoint's: otherwise its ids would mean other words.
    corpus = load_corpus(meta.get("data"), level=vocab.level, max_vocab=len(vocab))
    if corpus.vocab != vocab:
        new = [t for t in corpus.vocab.tokens if t not in vocab]
        detail = f"it has tokens the run never saw, e.g. {new[0]!r}" if new else "its ids are numbered differently"
        raise ValueError(f"{corpus.source}: not the vocabulary {checkpoint} was trained with ({detail})")
    trainer = lm.LMTrainer(model, corpus, config, out_dir, **trainer_args)
    trainer.restore(arrays, meta, checkpoint)
    trainer.extra_meta.update({k: meta.get(k) for k in ("data", "preset", "max_vocab")})
    safe = {k: getattr(args, k) for k in SAFE_ON_RESUME + lm.SAFE_ON_RESUME if getattr(args, k) is not None}
    return trainer, corpus, trainer.change_settings(safe)


def _report_best(out_dir, trainer, args):
    from nprnn.models.io import load_lm

    best = out_dir / "best.npz"
    if not best.exists():  # a resumed run that had nothing left to do and no best model yet
        return
    best_model, vocab, _, meta = load_lm(best)
    print(f"best valid perplexity {meta['valid_ppl']:.2f}, saved in {best}")
    for name in ("perplexity.png", "metrics.jsonl", "metrics.csv"):
        if (out_dir / name).exists():
            print(f"{name.split('.')[0]}: {out_dir / name}")
    if args.sample_length:
        _print_sample(best_model, vocab, "", args.sample_length, 0.8, None, trainer.config.seed)


def _run_name(args):
    preset = args.preset or "tiny"
    return f"builtin-{preset}" if args.data is None else f"{Path(args.data).stem}-{preset}"


def _sample(model, vocab, prompt, length, temperature, top_k, seed):
    from nprnn.models.lm import generate

    ids = generate(model, vocab, prompt, length, temperature, top_k, seed, skip_ids=(vocab.unk_id,))
    text = vocab.decode(ids)
    return prompt + (" " + text if vocab.level == "word" and prompt else text)


def _print_sample(model, vocab, prompt, length, temperature, top_k, seed):
    print(f"--- sample (temperature {temperature}, seed {seed}) ---")
    print(_sample(model, vocab, prompt, length, temperature, top_k, seed))
    print("---")


# ---------------------------------------------------------------- eval, generate


def cmd_eval(args):
    from nprnn.data.batching import check_batchable
    from nprnn.data.corpus import DataError, load_corpus, open_ids
    from nprnn.models.io import load_lm
    from nprnn.models.lm import evaluate

    model, vocab, _, meta = load_lm(args.checkpoint)
    if args.ids is not None:
        if args.data is not None or args.split is not None:
            raise ValueError("--ids is the data to evaluate; it cannot be combined with --data or --split")
        ids = open_ids(args.ids)  # memory-mapped: batches read only their tokens, the file is never loaded whole
        where, label, name = args.ids, "ids", Path(args.ids).name
        if len(ids) and (ids.min() < 0 or ids.max() >= len(vocab)):
            raise DataError(
                f"{where}: ids must be in [0, {len(vocab)}) for the checkpoint's vocabulary, "
                f"got min {ids.min()} and max {ids.max()}"
            )
    else:
        label = args.split or "test"
        data = args.data if args.data is not None else meta.get("data")
        corpus = load_corpus(data, vocab=vocab)  # the checkpoint's vocabulary: its ids are what the model learned
        ids, where, name = corpus.split(label), f"{corpus.source} ({label} split)", corpus.name
    check_batchable(ids, args.batch_size, args.bptt, where, "--batch-size/--bptt")
    chunk = 1 << 20  # counted a chunk at a time, so a memory-mapped file is never copied whole
    unk = sum(int((ids[i : i + chunk] == vocab.unk_id).sum()) for i in range(0, len(ids), chunk)) / len(ids)
    if unk > 0.5:
        print(
            f"nprnn: warning: {unk:.0%} of the tokens of {where} are <unk> for this checkpoint's vocabulary "
            "(other data?); the perplexity mostly measures how well it predicts <unk>",
            file=sys.stderr,
        )
    ppl = evaluate(model, ids, args.batch_size, args.bptt)
    print(f"{label} perplexity: {ppl:.2f}  ({name}, {len(ids):,} tokens, {unk:.1%} <unk>)")
    return 0


def cmd_generate(args):
    from nprnn.models.io import load_lm

    model, vocab, _, _ = load_lm(args.checkpoint)
    text = _sample(model, vocab, args.prompt, args.length, args.temperature, args.top_k, args.seed)
    print(f"nprnn: sample of {args.checkpoint} (temperature {args.temperature}, seed {args.seed})", file=sys.stderr)
    print(text)  # the sample alone on stdout, so it can be piped or redirected
    return 0


# ---------------------------------------------------------------- import-book, export


def cmd_import_book(args):
    from nprnn.interop import book

    if args.preset in ("seq2seq", "peeky", "attention"):
        path = book.import_book_seq2seq(
            args.params, args.preset, args.data, args.output, reverse=args.reverse, data_dir=args.data_dir
        )
    else:
        if args.reverse or args.data_dir:
            raise ValueError("--reverse and --data-dir apply to the seq2seq, peeky and attention presets only")
        path = book.import_book_lm(args.params, args.preset, args.data, args.output)
    print(f"wrote {path}")
    return 0


def cmd_export(args):
    from nprnn.interop.onnx_export import export_checkpoint_onnx

    out, difference = export_checkpoint_onnx(args.checkpoint, args.output, opset=args.opset, verify=not args.no_verify)
    checked = "" if difference is None else f" (checked with onnxruntime: max difference {difference:.1e})"
    print(f"wrote {out}{checked}")
    return 0


# ---------------------------------------------------------------- parsers


def add_commands(sub):
    """Register train, eval, generate, import-book and export on the top-level ``add_subparsers()``."""
    t = sub.add_parser(
        "train",
        help="train a language model (with no options: a small char-level LSTM on the built-in corpus)",
        description="Train a recurrent language model with truncated BPTT. Options left out take the preset's "
        "value. With --resume the run continues from its checkpoint: options that would change its model, data "
        "or random streams are refused; --lr, --epochs, --max-grad, --schedule, --decay, --decay-start, "
        "--save-every, --max-batches, --eval-batch-size and --eval-bptt apply from the resume point.",
    )
    t.add_argument(
        "--data",
        metavar="DIR|FILE",
        help="a directory with *.train.txt/*.valid.txt/*.test.txt (PTB "
        "layout) or one text file split 90/5/5 by lines; default: the built-in corpus (Python's docs)",
    )
    t.add_argument(
        "--level",
        choices=["word", "char"],
        help="tokens are words (split on whitespace, <eos> at line ends) or characters (default: the preset's)",
    )
    t.add_argument(
        "--max-vocab", type=positive, help="keep only the N most frequent training tokens; others become <unk>"
    )
    t.add_argument("--preset", choices=list(PRESETS), help="named configuration (default tiny): " + ", ".join(PRESETS))
    g = t.add_argument_group("model")
    g.add_argument("--cell", choices=["rnn", "lstm", "gru"], help="recurrent cell")
    g.add_argument("--layers", type=positive, help="number of stacked recurrent layers")
    g.add_argument("--hidden", type=positive, help="hidden size H of each recurrent layer")
    g.add_argument("--embed", type=positive, help="embedding size E")
    g.add_argument("--dropout", type=probability, help="dropout on the non-recurrent connections, in [0, 1)")
    g.add_argument(
        "--tie",
        dest="tie_weights",
        action=argparse.BooleanOptionalAction,
        help="tie the output projection to the embedding (needs --embed == --hidden)",
    )
    g.add_argument("--init", choices=["xavier", "uniform"], help="weight init: the textbook's or uniform(-s, s)")
    g.add_argument("--init-scale", type=positive_real, help="s of the uniform init (positive)")
    g.add_argument("--dtype", choices=["float32", "float64"], help="parameter dtype (default float32)")
    g = t.add_argument_group("optimization")
    g.add_argument("--optimizer", choices=list(OPTIMIZER_NAMES), help="update rule")
    g.add_argument("--lr", type=positive_real, help="learning rate")
    g.add_argument("--max-grad", type=nonnegative_real, help="clip the global gradient norm to this (0: no clipping)")
    g.add_argument(
        "--schedule",
        choices=list(SCHEDULES),
        help="learning-rate schedule: plateau multiplies the lr by --decay after an epoch whose validation "
        "perplexity did not improve; step multiplies it by --decay every epoch from --decay-start; cosine anneals "
        "it to 0 over the run (re-planned over the new total when --resume changes --epochs); none keeps it",
    )
    g.add_argument(
        "--decay", type=factor, help="the factor in (0, 1) that plateau and step multiply the lr by (0.25: divide by 4)"
    )
    g.add_argument("--decay-start", type=positive, help="first epoch after which the step schedule decays")
    g.add_argument(
        "--epochs",
        type=positive,
        help="passes over the training split (with --resume: the run's new total, counting the epochs done)",
    )
    g.add_argument("--batch-size", type=positive, help="number of parallel streams N")
    g.add_argument("--bptt", type=positive, help="truncated-BPTT length T (time steps per batch)")
    g.add_argument("--eval-batch-size", type=positive, help="batch size for validation perplexity")
    g.add_argument("--eval-bptt", type=positive, help="time steps per batch for validation perplexity")
    g.add_argument("--max-batches", type=count, help="cap on batches per epoch, for quick runs (0: no cap)")
    g.add_argument("--seed", type=count, help="seed of weights, dropout and sampling: same seed, same numbers")
    g = t.add_argument_group("output")
    g.add_argument("--out", metavar="DIR", help="output directory (default runs/<data>-<preset>)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint.npz")
    g.add_argument(
        "--force", action="store_true", default=False, help="start over even if --out already has a checkpoint"
    )
    g.add_argument(
        "--save-every", type=count, help="also checkpoint every N steps within an epoch (0: epoch ends only)"
    )
    g.add_argument("--log-format", choices=["jsonl", "csv"], help="metrics log format (default jsonl)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (one line per epoch only)")
    g.add_argument("--sample-length", type=count, default=300, help="tokens to sample at the end (0: none)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser(
        "eval",
        help="perplexity of a checkpoint on a split",
        description="Perplexity as the textbook's eval_perplexity computes it. The data is encoded with the "
        "checkpoint's vocabulary (unknown tokens become <unk>; their share is shown, with a warning above 50%).",
    )
    e.add_argument("checkpoint", help="a .npz written by nprnn train or nprnn import-book")
    e.add_argument("--data", metavar="DIR|FILE", help="corpus (default: the one the checkpoint was trained on)")
    e.add_argument("--split", choices=["train", "valid", "test"], help="which split (default test)")
    e.add_argument(
        "--ids",
        metavar="FILE.npy",
        help="evaluate this token-id file instead (nprnn.data.encode_file / save_ids, ids of the checkpoint's "
        "vocabulary); it is memory-mapped, so it may be larger than memory",
    )
    e.add_argument("--batch-size", type=positive, default=10, help="parallel streams (default 10, as the textbook)")
    e.add_argument("--bptt", type=positive, default=35, help="time steps per batch (default 35, as the textbook)")
    e.set_defaults(func=cmd_eval)

    gen = sub.add_parser("generate", help="sample text from a checkpoint")
    gen.add_argument("checkpoint", help="a .npz written by nprnn train or nprnn import-book")
    gen.add_argument("--prompt", default="", help="text to continue (default: start of a line)")
    gen.add_argument("--length", type=positive, default=100, help="number of tokens to generate (default 100)")
    gen.add_argument(
        "--temperature", type=nonnegative_real, default=1.0, help="softmax temperature; 0 is greedy (default 1)"
    )
    gen.add_argument("--top-k", type=positive, help="sample only among the K most likely tokens")
    gen.add_argument("--seed", type=count, default=0, help="sampling seed (default 0)")
    gen.set_defaults(func=cmd_generate)

    b = sub.add_parser(
        "import-book",
        help="convert parameters saved by the textbook's code into a checkpoint",
        description="Read a .pkl written by the textbook's save_params with a restricted unpickler "
        "(NumPy arrays only; anything else is refused) and write an nprnn checkpoint.",
    )
    b.add_argument("params", metavar="FILE.pkl", help="the textbook's saved parameters (e.g. Rnnlm.pkl)")
    b.add_argument(
        "--preset",
        required=True,
        choices=["rnnlm", "better-rnnlm", "seq2seq", "peeky", "attention"],
        help="the textbook model they belong to: a language model (ch06) or a seq2seq model (ch07-08)",
    )
    b.add_argument(
        "--data",
        required=True,
        metavar="DIR|addition|date|FILE",
        help="what it was trained on, for its vocabulary: the corpus directory for rnnlm/better-rnnlm; the "
        "question_answer file (or addition/date with --data-dir) for seq2seq/peeky/attention",
    )
    b.add_argument(
        "--data-dir",
        default=os.environ.get("NPRNN_DATA_DIR"),
        metavar="DIR",
        help="folder holding addition.txt/date.txt (default $NPRNN_DATA_DIR)",
    )
    b.add_argument(
        "--reverse",
        action="store_true",
        help="the book's script reversed the questions (ch08/train.py does); the pickle does not record it",
    )
    b.add_argument("-o", "--output", required=True, metavar="CHECKPOINT", help="the .npz to write")
    b.set_defaults(func=cmd_import_book)

    x = sub.add_parser(
        "export",
        help="write a checkpoint's language model as ONNX (needs the interop extra)",
        description="Export the language model of a checkpoint to ONNX with the RNN/LSTM/GRU operators. "
        "Inputs: ids (N, T) int64 and h0 (and c0 for an LSTM) shaped (layers, N, hidden), zeros to start; "
        "outputs: logits (N, T, V) and h_n (and c_n), to feed back as h0 (and c0) to continue the text. "
        "The vocabulary is stored in the model's metadata (nprnn.vocab).",
    )
    x.add_argument("checkpoint", help="a .npz written by nprnn train or nprnn import-book")
    x.add_argument("-o", "--output", required=True, metavar="MODEL.onnx", help="the .onnx file to write")
    x.add_argument("--opset", type=positive, default=17, help="ONNX opset version, 14 or later (default 17)")
    x.add_argument(
        "--no-verify", action="store_true", help="do not run the export with onnxruntime against nprnn before writing"
    )
    x.set_defaults(func=cmd_export)
