"""The ``nprnn`` command line: train, eval, generate, import-book, demo.

Errors a user can cause (bad files, bad options, numeric blow-ups) end as one line on stderr
with exit code 2; Ctrl-C during training saves a resumable checkpoint and exits with 130.
"""

import argparse
import os
import sys
from pathlib import Path

BUILTIN = "built-in"


# ---------------------------------------------------------------- train


def _model_overrides(args):
    keys = ("cell", "embed", "hidden", "layers", "dropout", "tie_weights", "init", "init_scale")
    return {k: getattr(args, k) for k in keys}


def _train_overrides(args):
    keys = (
        "epochs", "batch_size", "bptt", "optimizer", "lr", "max_grad", "schedule", "decay", "decay_start",
        "eval_batch_size", "eval_bptt", "seed", "save_every", "max_batches",
    )  # fmt: skip
    return {k: getattr(args, k) for k in keys}


def cmd_train(args):
    import numpy as np

    from nprnn.data.corpus import load_corpus
    from nprnn.distributed import abort_on_error, mpi_world
    from nprnn.models.lm import LanguageModel, LMConfig
    from nprnn.train import TrainConfig, Trainer, load_lm, split_preset

    comm = mpi_world()  # None unless started by mpiexec with more than one process
    root = comm is None or comm.Get_rank() == 0
    say = print if root else (lambda *a, **k: None)
    dtype = np.dtype(args.dtype)
    out_dir = Path(args.out) if args.out else Path("runs") / _run_name(args)
    checkpoint = out_dir / "checkpoint.npz"
    if args.resume:
        if not checkpoint.exists():
            raise ValueError(f"{checkpoint}: no checkpoint to resume from (train once without --resume first)")
        model, vocab, arrays, meta = load_lm(checkpoint)
        if meta.get("train") is None or meta.get("progress") is None:  # before reading any data
            raise ValueError(f"{checkpoint}: holds a model but no training state; cannot resume from it")
        data = args.data if args.data is not None else meta.get("data")
        # Rebuilt as the run built it (capping at the checkpoint's size keeps the same most frequent
        # tokens), the data's vocabulary must be the checkpoint's: otherwise its ids would mean other words.
        corpus = load_corpus(data, level=vocab.level, max_vocab=len(vocab))
        if corpus.vocab != vocab:
            new = [t for t in corpus.vocab.tokens if t not in vocab]
            detail = f"it has tokens the run never saw, e.g. {new[0]!r}" if new else "its ids are numbered differently"
            raise ValueError(
                f"{corpus.source}: not the vocabulary {checkpoint} was trained with ({detail}); "
                "--resume continues on the same data (use --force to start a new run on other data)"
            )
        train_settings = dict(meta.get("train") or {})
        if args.epochs is not None:
            train_settings["epochs"] = args.epochs
        try:
            config = TrainConfig(**train_settings)
        except TypeError as e:
            raise ValueError(f"{checkpoint}: its training settings do not fit this nprnn ({e})") from None
        trainer = Trainer(
            model, corpus, config, out_dir, progress_bar=not args.no_progress, log_format=args.log_format, comm=comm
        )
        trainer.restore(arrays, meta, checkpoint)
        p = trainer.progress
        say(f"resuming {checkpoint} at epoch {p.epoch + 1}, iteration {p.iteration} (step {p.step})")
    else:
        model_settings, train_settings, level = split_preset(
            args.preset, {**_model_overrides(args), **_train_overrides(args)}
        )
        level = args.level or level
        corpus = load_corpus(args.data, level=level, max_vocab=args.max_vocab)
        config = TrainConfig(**train_settings)
        model = LanguageModel(LMConfig(vocab_size=len(corpus.vocab), **model_settings), seed=config.seed, dtype=dtype)
        trainer = Trainer(
            model, corpus, config, out_dir, progress_bar=not args.no_progress, log_format=args.log_format, comm=comm
        )
        if checkpoint.exists() and not args.force:
            raise ValueError(f"{checkpoint} exists: pass --resume to continue it, or --force to start over")

    if args.data is not None:
        trainer.extra_meta["data"] = str(Path(args.data).resolve())
    elif args.resume:
        trainer.extra_meta["data"] = meta.get("data")
    c, m = trainer.config, model.config
    n_params = sum(p.size for p in model.params)
    say(f"data: {corpus}")
    say(
        f"model: {m.cell} {m.layers}x{m.hidden}, embed {m.embed}, dropout {m.dropout}, tied {m.tie_weights}; "
        f"{n_params:,} parameters ({model.params[0].dtype})"
    )
    say(
        f"training: {c.epochs} epochs x {trainer.iters_per_epoch} batches of {c.batch_size}x{c.bptt}, "
        f"{c.optimizer} lr {c.lr}, clip {c.max_grad or 'off'}, schedule {c.schedule}, seed {c.seed}"
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

    best = out_dir / "best.npz"
    best_model, vocab, _, meta = load_lm(best)
    print(f"best valid perplexity {meta['valid_ppl']:.2f}, saved in {best}")
    for name in ("perplexity.png", "metrics.jsonl", "metrics.csv"):
        if (out_dir / name).exists():
            print(f"{name.split('.')[0]}: {out_dir / name}")
    if args.sample_length:
        _print_sample(best_model, vocab, "", args.sample_length, 0.8, None, c.seed)
    return 0


def _run_name(args):
    if args.data is None:
        return f"builtin-{args.preset}"
    return f"{Path(args.data).stem}-{args.preset}"


def _print_sample(model, vocab, prompt, length, temperature, top_k, seed):
    from nprnn.models.lm import generate

    ids = generate(model, vocab, prompt, length, temperature, top_k, seed, skip_ids=(vocab.unk_id,))
    text = vocab.decode(ids)
    if vocab.level == "word" and prompt:
        text = " " + text
    print(f"--- sample (temperature {temperature}, seed {seed}) ---")
    print(prompt + text)
    print("---")


# ---------------------------------------------------------------- eval, generate


def cmd_eval(args):
    from nprnn.data.corpus import DataError, load_corpus, open_ids
    from nprnn.train import check_batchable, evaluate, load_lm

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
    from nprnn.train import load_lm

    model, vocab, _, _ = load_lm(args.checkpoint)
    _print_sample(model, vocab, args.prompt, args.length, args.temperature, args.top_k, args.seed)
    return 0


# ---------------------------------------------------------------- import-book


def cmd_import_book(args):
    if args.preset in ("seq2seq", "peeky", "attention"):
        from nprnn.train_seq2seq import import_book_seq2seq

        path = import_book_seq2seq(
            args.params, args.preset, args.data, args.output, reverse=args.reverse, data_dir=args.data_dir
        )
    else:
        if args.reverse or args.data_dir:
            raise ValueError("--reverse and --data-dir apply to the seq2seq, peeky and attention presets only")
        from nprnn.book import import_book_lm

        path = import_book_lm(args.params, args.preset, args.data, args.output)
    print(f"wrote {path}")
    return 0


# ---------------------------------------------------------------- export


def cmd_export(args):
    from nprnn.interop.onnx_export import export_checkpoint_onnx

    out, difference = export_checkpoint_onnx(args.checkpoint, args.output, opset=args.opset, verify=not args.no_verify)
    checked = "" if difference is None else f" (checked with onnxruntime: max difference {difference:.1e})"
    print(f"wrote {out}{checked}")
    return 0


# ---------------------------------------------------------------- demo


def cmd_demo(args):
    from nprnn.demo import run_demo

    losses = run_demo(delay=args.delay, epochs=args.epochs, hidden=args.hidden, seed=args.seed)
    print(f"loss went from {losses[0]:.5f} to {losses[-1]:.5f}")
    return 0


# ---------------------------------------------------------------- parser


def build_parser():
    from nprnn.train import OPTIMIZERS, PRESETS, SCHEDULES

    parser = argparse.ArgumentParser(prog="nprnn", description="Recurrent neural networks in NumPy.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser(
        "train",
        help="train a language model (with no options: a small char-level LSTM on the built-in corpus)",
        description="Train a recurrent language model with truncated BPTT. Options left out take the preset's value.",
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
    t.add_argument("--max-vocab", type=int, help="keep only the N most frequent training tokens; others become <unk>")
    t.add_argument(
        "--preset",
        default="tiny",
        choices=list(PRESETS),
        help="named configuration (default tiny): " + ", ".join(PRESETS),
    )
    g = t.add_argument_group("model")
    g.add_argument("--cell", choices=["rnn", "lstm", "gru"], help="recurrent cell")
    g.add_argument("--layers", type=int, help="number of stacked recurrent layers")
    g.add_argument("--hidden", type=int, help="hidden size H of each recurrent layer")
    g.add_argument("--embed", type=int, help="embedding size E")
    g.add_argument("--dropout", type=float, help="dropout on the non-recurrent connections, in [0, 1)")
    g.add_argument(
        "--tie",
        dest="tie_weights",
        action=argparse.BooleanOptionalAction,
        help="tie the output projection to the embedding (needs --embed == --hidden)",
    )
    g.add_argument("--init", choices=["xavier", "uniform"], help="weight init: the textbook's or uniform(-s, s)")
    g.add_argument("--init-scale", type=float, help="s of the uniform init")
    g.add_argument(
        "--dtype", default="float32", choices=["float32", "float64"], help="parameter dtype (default float32)"
    )
    g = t.add_argument_group("optimization")
    g.add_argument("--optimizer", choices=list(OPTIMIZERS), help="update rule")
    g.add_argument("--lr", type=float, help="learning rate")
    g.add_argument("--max-grad", type=float, help="clip the global gradient norm to this (0: no clipping)")
    g.add_argument(
        "--schedule",
        choices=list(SCHEDULES),
        help="learning-rate schedule: plateau divides by --decay "
        "when validation perplexity stops improving; step multiplies by --decay every epoch from "
        "--decay-start; cosine anneals to 0 over the epochs",
    )
    g.add_argument("--decay", type=float, help="the schedule's factor")
    g.add_argument("--decay-start", type=int, help="first epoch after which the step schedule decays")
    g.add_argument("--epochs", type=int, help="number of passes over the training split (with --resume: the new total)")
    g.add_argument("--batch-size", type=int, help="number of parallel streams N")
    g.add_argument("--bptt", type=int, help="truncated-BPTT length T (time steps per batch)")
    g.add_argument("--eval-batch-size", type=int, help="batch size for validation perplexity")
    g.add_argument("--eval-bptt", type=int, help="time steps per batch for validation perplexity")
    g.add_argument("--max-batches", type=int, help="cap on batches per epoch, for quick runs (0: no cap)")
    g.add_argument("--seed", type=int, help="seed of weights, dropout and sampling: same seed, same numbers")
    g = t.add_argument_group("output")
    g.add_argument("--out", metavar="DIR", help="output directory (default runs/<data>-<preset>)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint.npz")
    g.add_argument("--force", action="store_true", help="start over even if --out already has a checkpoint")
    g.add_argument("--save-every", type=int, help="also checkpoint every N steps within an epoch")
    g.add_argument("--log-format", default="jsonl", choices=["jsonl", "csv"], help="metrics log format")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (one line per epoch only)")
    g.add_argument("--sample-length", type=int, default=300, help="tokens to sample at the end (0: none)")
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
    e.add_argument("--batch-size", type=int, default=10, help="parallel streams (default 10, as the textbook)")
    e.add_argument("--bptt", type=int, default=35, help="time steps per batch (default 35, as the textbook)")
    e.set_defaults(func=cmd_eval)

    gen = sub.add_parser("generate", help="sample text from a checkpoint")
    gen.add_argument("checkpoint", help="a .npz written by nprnn train or nprnn import-book")
    gen.add_argument("--prompt", default="", help="text to continue (default: start of a line)")
    gen.add_argument("--length", type=int, default=100, help="number of tokens to generate (default 100)")
    gen.add_argument("--temperature", type=float, default=1.0, help="softmax temperature; 0 is greedy (default 1)")
    gen.add_argument("--top-k", type=int, help="sample only among the K most likely tokens")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
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
    x.add_argument("--opset", type=int, default=17, help="ONNX opset version, 14 or later (default 17)")
    x.add_argument(
        "--no-verify", action="store_true", help="do not run the export with onnxruntime against nprnn before writing"
    )
    x.set_defaults(func=cmd_export)

    d = sub.add_parser("demo", help="train a TimeRNN on a generated echo task and show the loss going down")
    d.add_argument("--delay", type=int, default=2, help="how many steps back the network must echo (default 2)")
    d.add_argument("--epochs", type=int, default=30, help="passes over the 1024 generated sequences (default 30)")
    d.add_argument("--hidden", type=int, default=32, help="hidden size H of the TimeRNN (default 32)")
    d.add_argument("--seed", type=int, default=0, help="seed for data, initial weights and shuffling (default 0)")
    d.set_defaults(func=cmd_demo)

    from nprnn.train_seq2seq import add_seq2seq_commands

    add_seq2seq_commands(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt as e:
        print(f"nprnn: {e or 'interrupted'}", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as e:
        print(f"nprnn: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
