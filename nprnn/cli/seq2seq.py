"""``nprnn seq2seq train | eval | translate``: encoder-decoder models on ``question_answer`` files.

Parsing and printing only: ``nprnn.training.seq2seq`` trains, ``nprnn.models`` loads and decodes.
"""

from pathlib import Path

from nprnn.cli.args import count, factor, nonnegative_real, positive, positive_real
from nprnn.data.seq2seq import DATA_DIR_ENV
from nprnn.training.presets import OPTIMIZER_NAMES, SCHEDULES, SEQ2SEQ_DEFAULTS, SEQ2SEQ_MODELS, SPLIT_SEED

TRAIN_OPTIONS = (
    "epochs", "batch_size", "optimizer", "lr", "schedule", "decay", "decay_start", "max_grad", "seed", "beam",
    "eval_batch_size", "save_every", "max_batches",
)  # fmt: skip


def cmd_train(args):
    import numpy as np

    from nprnn.data.seq2seq import find_data, load_seq2seq
    from nprnn.models.decode import predict
    from nprnn.models.seq2seq import build_model
    from nprnn.training.distributed import abort_on_error, mpi_world
    from nprnn.training.seq2seq import Seq2seqConfig, Seq2seqTrainer

    comm = mpi_world()  # None unless started by mpiexec with more than one process
    root = comm is None or comm.Get_rank() == 0
    say = print if root else (lambda *a, **k: None)
    kind = args.model or SEQ2SEQ_DEFAULTS["model"]
    out_dir = Path(args.out) if args.out else Path("runs") / f"seq2seq-{Path(args.data or 'resumed').stem}-{kind}"
    checkpoint = out_dir / "checkpoint.npz"
    trainer_args = dict(progress_bar=not args.no_progress, comm=comm)
    if args.schedule == "constant":  # nprnn 0.1's name for it
        args.schedule = "none"
    if args.resume:
        trainer, changes = _resume(args, checkpoint, out_dir, trainer_args)
        model, data, p = trainer.model, trainer.data, trainer.progress
        say(
            f"resuming {checkpoint} at epoch {p.epoch + 1}, iteration {p.iteration} (step {p.step})"
            + (f"; changed: {', '.join(changes)}" if changes else "")
        )
    else:
        if args.data is None:
            raise ValueError("--data is required (addition, date or a question_answer file)")
        if checkpoint.exists() and not args.force:
            raise ValueError(f"{checkpoint} exists: pass --resume to continue it, or --force to start over")
        data_path = find_data(args.data, args.data_dir)
        split_seed = SPLIT_SEED if args.split_seed is None else args.split_seed
        data = load_seq2seq(data_path, seed=split_seed, reverse=bool(args.reverse))
        config = Seq2seqConfig(**{k: getattr(args, k) for k in TRAIN_OPTIONS if getattr(args, k) is not None})
        embed = args.embed or SEQ2SEQ_DEFAULTS["embed"]
        hidden = args.hidden or SEQ2SEQ_DEFAULTS["hidden"]
        model = build_model(
            kind, data.vocab_size, embed, hidden, config.validate().seed, np.dtype(args.dtype or "float32")
        )
        trainer = Seq2seqTrainer(model, data, config, out_dir, overwrite=bool(args.force), **trainer_args)
        trainer.extra_meta.update(data=str(Path(data_path).resolve()), split_seed=split_seed)

    c, n_params = trainer.config, sum(p.size for p in model.params)
    say(
        f"data: {data.path}: {len(data.x_train):,} train / {len(data.x_test):,} test, {data.vocab_size} characters, "
        f"questions {data.question_width} wide{' (reversed)' if data.reverse else ''}, answers {data.answer_width - 1}"
    )
    m = model.config
    say(
        f"model: {m['kind']}, embed {m['embed']}, hidden {m['hidden']}; "
        f"{n_params:,} parameters ({model.params[0].dtype})"
    )
    say(
        f"training: {c.epochs} epochs x {trainer.iters_per_epoch} batches of {c.batch_size}, {c.optimizer} lr {c.lr}"
        f"{'' if c.schedule == 'none' else f', schedule {c.schedule}'}, clip {c.max_grad or 'off'}, seed {c.seed}; "
        f"output: {out_dir}/"
    )
    if comm is None:
        history = trainer.run()
    else:
        say(f"data parallel: {comm.Get_size()} MPI ranks, each on its share of the {c.batch_size} rows of a batch")
        with abort_on_error(comm):
            history = trainer.run()
        if not root:
            return 0
    if history:
        print(f"test exact-match accuracy {100 * history[-1]['test_accuracy']:.2f}%, checkpoint {checkpoint}")
    print(f"accuracy plot: {out_dir / 'accuracy.png'}, metrics: {out_dir / 'metrics.jsonl'}")
    x, t = data.x_test[:3], data.t_test[:3]
    guesses = predict(model, x, data.start_id, data.answer_width - 1, c.beam)
    for xi, ti, gi in zip(x, t, guesses):
        right = np.array_equal(gi, ti[1:])
        expected = "" if right else f"  (expected {data.decode(ti[1:]).rstrip()})"
        print(
            f"  {'ok ' if right else 'BAD'} {data.decode_question(xi).rstrip()} -> {data.decode(gi).rstrip()}{expected}"
        )
    return 0


def _resume(args, checkpoint, out_dir, trainer_args):
    from nprnn.data.seq2seq import find_data, load_data_like
    from nprnn.models.io import load_seq2seq
    from nprnn.training import seq2seq
    from nprnn.training.loop import SAFE_ON_RESUME, open_resume, refuse_changes

    model, vocab, arrays, meta, config = open_resume(checkpoint, load_seq2seq, seq2seq.Seq2seqConfig, args.force)
    m = model.config
    given_data = None if args.data is None else str(Path(find_data(args.data, args.data_dir)).resolve())
    split_seed = meta.get("split_seed", SPLIT_SEED)
    refuse_changes({
        "--model": (args.model, m["kind"]), "--embed": (args.embed, m["embed"]), "--hidden": (args.hidden, m["hidden"]),
        "--dtype": (args.dtype, str(model.params[0].dtype)), "--data": (given_data, meta.get("data")),
        "--reverse": (args.reverse, vocab.reverse), "--split-seed": (args.split_seed, split_seed),
        "--batch-size": (args.batch_size, config.batch_size), "--optimizer": (args.optimizer, config.optimizer),
        "--seed": (args.seed, config.seed),
    }, out_dir)  # fmt: skip
    if meta.get("data") is None:
        raise ValueError(f"{checkpoint}: records no data file; cannot resume")
    data = load_data_like(meta["data"], vocab, split_seed)
    trainer = seq2seq.Seq2seqTrainer(model, data, config, out_dir, **trainer_args)
    trainer.restore(arrays, meta, checkpoint)
    trainer.extra_meta.update(data=meta["data"], split_seed=split_seed)
    safe = {k: getattr(args, k) for k in SAFE_ON_RESUME + seq2seq.SAFE_ON_RESUME if getattr(args, k) is not None}
    return trainer, trainer.change_settings(safe)


def cmd_eval(args):
    import numpy as np

    from nprnn.data.seq2seq import find_data, load_data_like
    from nprnn.models.decode import exact_match
    from nprnn.models.io import load_seq2seq

    model, vocab, _, meta = load_seq2seq(args.checkpoint)
    data_path = find_data(args.data, args.data_dir) if args.data else meta.get("data")
    if data_path is None:
        raise ValueError(f"{args.checkpoint}: records no data file; pass --data")
    data = load_data_like(data_path, vocab, meta.get("split_seed", SPLIT_SEED))
    x, t = {
        "test": (data.x_test, data.t_test),
        "train": (data.x_train, data.t_train),
        "all": (np.concatenate((data.x_train, data.x_test)), np.concatenate((data.t_train, data.t_test))),
    }[args.split]
    accuracy = exact_match(model, x, t, args.beam, args.batch_size)
    decoding = "greedy" if args.beam == 1 else f"beam {args.beam}"
    print(
        f"{args.split} exact-match accuracy: {100 * accuracy:.2f}% "
        f"({round(accuracy * len(x))}/{len(x)}, {decoding}, {Path(data_path).name})"
    )
    return 0


def cmd_translate(args):
    from nprnn.models.decode import attention_weights, translate
    from nprnn.models.io import load_seq2seq
    from nprnn.models.seq2seq import plot_attention

    model, vocab, _, _ = load_seq2seq(args.checkpoint)
    if args.attention_plot and len(args.questions) != 1:
        raise ValueError(f"--attention-plot draws one question's map, got {len(args.questions)} questions")
    if args.attention_plot and model.config["kind"] != "attention":
        raise ValueError(
            f"--attention-plot needs an attention model; {args.checkpoint} holds a {model.config['kind']} model"
        )
    for answer in translate(model, vocab, args.questions, args.beam):
        print(answer)
    if args.attention_plot:
        question = args.questions[0]
        weights, question_chars, answer_chars = attention_weights(model, vocab, question)
        title = f"{question} -> {''.join(answer_chars)}"
        plot_attention(weights, question_chars, answer_chars, args.attention_plot, title=title)
        print(f"attention map: {args.attention_plot}")
    return 0


def _add_data_options(p, what="the question_answer file"):
    p.add_argument(
        "--data",
        metavar="addition|date|FILE",
        help=f"{what}: a file in the textbook's format, or the textbook's addition/date "
        f"(found in --data-dir, since nprnn ships no data)",
    )
    p.add_argument(
        "--data-dir", metavar="DIR", help=f"folder holding addition.txt and date.txt (default: ${DATA_DIR_ENV})"
    )


def add_commands(subparsers):
    """Register ``nprnn seq2seq train|eval|translate`` on the top-level ``add_subparsers()`` object."""
    s = subparsers.add_parser(
        "seq2seq",
        help="encoder-decoder models on question_answer files (the textbook's addition and date tasks)",
        description="Train and use Seq2seq, PeekySeq2seq and AttentionSeq2seq on character-level "
        "question_answer files (question and answer split at the first '_', fixed widths).",
    )
    sub = s.add_subparsers(dest="seq2seq_command", required=True, metavar="SUBCOMMAND", help="train, eval or translate")

    t = sub.add_parser(
        "train",
        help="train a model; exact-match accuracy on the test split after every epoch",
        description="Train with the textbook's settings by default: embed 16, hidden 128, batch 128, "
        "Adam lr 0.001, gradient clipping 5.0, the 90/10 train/test split with seed 1984. With --resume the run "
        "continues from its checkpoint: options that would change its model, data or random streams are refused; "
        "--lr, --epochs, --max-grad, --schedule, --decay, --decay-start, --save-every, --max-batches, --beam and "
        "--eval-batch-size apply from the resume point.",
    )
    _add_data_options(t, what="training data (with --resume: the checkpoint's)")
    t.add_argument("--model", choices=list(SEQ2SEQ_MODELS), help="encoder-decoder variant (default attention)")
    t.add_argument(
        "--reverse", action="store_true", default=None, help="reverse the questions (the textbook's trick; helps)"
    )
    t.add_argument("--split-seed", type=count, help=f"seed of the train/test shuffle (default {SPLIT_SEED})")
    g = t.add_argument_group("model and optimization")
    g.add_argument("--embed", type=positive, help="character embedding size (default 16)")
    g.add_argument("--hidden", type=positive, help="LSTM hidden size (default 128; the book uses 256 for date)")
    g.add_argument("--dtype", choices=["float32", "float64"], help="parameter dtype (default float32)")
    g.add_argument(
        "--epochs", type=positive, help="passes over the training split (default 10; with --resume: the new total)"
    )
    g.add_argument("--batch-size", type=positive, help="examples per update (default 128)")
    g.add_argument("--optimizer", choices=list(OPTIMIZER_NAMES), help="update rule (default adam)")
    g.add_argument("--lr", type=positive_real, help="learning rate (default 0.001)")
    g.add_argument(
        "--schedule",
        choices=list(SCHEDULES) + ["constant"],
        help="learning rate over the run: none (default, the book's; 'constant' is the same), cosine (from --lr "
        "down to 0 over the run; with --lr 0.005 it learns addition to 99%% in 10 epochs, see "
        "benchmarks/RESULTS_SEQ2SEQ.md), step or plateau (times --decay)",
    )
    g.add_argument("--decay", type=factor, help="the factor in (0, 1) that plateau and step multiply the lr by")
    g.add_argument("--decay-start", type=positive, help="first epoch after which the step schedule decays")
    g.add_argument(
        "--max-grad", type=nonnegative_real, help="clip the global gradient norm to this (default 5.0; 0: off)"
    )
    g.add_argument("--seed", type=count, help="seed of the initial weights and of the shuffles (default 0)")
    g.add_argument("--beam", type=positive, help="beam width for the test accuracy (default 1: greedy)")
    g.add_argument("--eval-batch-size", type=positive, help="questions decoded at once (default 1000)")
    g.add_argument("--max-batches", type=count, help="cap on batches per epoch, for quick runs (0: no cap)")
    g = t.add_argument_group("output")
    g.add_argument("--out", metavar="DIR", help="output directory (default runs/seq2seq-<data>-<model>)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint.npz")
    g.add_argument("--force", action="store_true", help="start over even if --out already has a checkpoint")
    g.add_argument(
        "--save-every", type=count, help="also checkpoint every N steps within an epoch (0: epoch ends only)"
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar (one line per epoch only)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser(
        "eval",
        help="exact-match accuracy of a checkpoint",
        description="The fraction of questions whose whole answer the model gets right.",
    )
    e.add_argument("checkpoint", help="a .npz written by nprnn seq2seq train (or import-book)")
    _add_data_options(e, what="data to score (default: the checkpoint's); split as in training")
    e.add_argument("--split", default="test", choices=["test", "train", "all"], help="which part (default test)")
    e.add_argument("--beam", type=positive, default=1, help="beam width (default 1: greedy decoding)")
    e.add_argument("--batch-size", type=positive, default=1000, help="questions decoded at once (default 1000)")
    e.set_defaults(func=cmd_eval)

    r = sub.add_parser(
        "translate",
        help="answer questions with a checkpoint",
        description='Print the model\'s answer to each question, e.g. "september 27, 1994".',
    )
    r.add_argument("checkpoint", help="a .npz written by nprnn seq2seq train (or import-book)")
    r.add_argument("questions", nargs="+", metavar="QUESTION", help="question text, as written in the data file")
    r.add_argument("--beam", type=positive, default=1, help="beam width (default 1: greedy decoding)")
    r.add_argument(
        "--attention-plot", metavar="PNG", help="write the attention heatmap of the answer (attention models)"
    )
    r.set_defaults(func=cmd_translate)
    return s
