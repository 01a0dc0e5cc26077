"""Direct Preference Optimization of MiniMind on chosen / rejected pairs, with the prompt computed once per pair.

Run from the repo root (see README.md, "Post-training"):

    python trainer/train_dpo.py --data_path dataset/dpo_demo.jsonl --init_weight out/full_sft_512.pth
    python -m trainer.train_dpo ...
    torchrun --nproc_per_node 8 trainer/train_dpo.py ... --ddp

Data: `{"chosen": [msgs], "rejected": [msgs]}` or `{"prompt", "chosen", "rejected"}` (parallel_data/preference.py).
Each pair is one sample: the shared prompt once, then both responses as isolated branches at branch
coordinate 0, which scores each response exactly as its own sequence would. The loss (`--loss_type`
sigmoid | ipo | hinge, `--beta`) is taken on the response tokens against a frozen reference, the
starting checkpoint (also when resuming); `--precompute_ref` scores every pair with it once before the
first step and then frees it. Logs TRL's metrics (rewards/chosen, rewards/rejected, rewards/accuracies,
rewards/margins, logps/chosen, logps/rejected), per pair, and their val_ versions with --val_samples.
Starts from --init_weight (alias --model_path; default {out_dir}/full_sft_{hidden}[_moe].pth) and writes
{out_dir}/dpo_{hidden}[_moe].pth; the model keeps its own mask rule for inference.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from parallel.names import DPO_LOSS_TYPES
from trainer.args import add_beta_arg, add_loss_type_arg, add_minimind_train_args
from trainer.cli import ArgParser, check_flags_first, cli_main, make_parser


def build_parser() -> ArgParser:
    p = make_parser(__doc__, "train_dpo")
    add_minimind_train_args(p, default_data="dataset/dpo_demo.jsonl", kind="pairs", default_branches=2,
                            batch_size=4, epochs=1, lr=1e-6, wandb_project="MiniMind-DPO")
    g = p.add_argument_group("DPO")
    add_beta_arg(g, 0.1, "strength of the tie to the reference (default 0.1)")
    add_loss_type_arg(g, DPO_LOSS_TYPES, "DPO (sigmoid), IPO or hinge loss")
    g.add_argument("--precompute_ref", action="store_true",
                   help="score every pair with the reference once before training, then free the reference")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


if __name__ == "__main__":  # a bad flag is reported before the engine and torch are imported
    check_flags_first(build_parser)

from model.device import autocast_dtype  # noqa: E402
from parallel_data.preference import PreferenceDataset  # noqa: E402
from trainer.engine import Companion, run  # noqa: E402
from trainer.minimind import MiniMindStage, init_weight_path, load_companion_checkpoint  # noqa: E402
from trainer.preference import DPOLoss, pair_batches, precompute_reference  # noqa: E402

log = logging.getLogger("parallelmind")


class DPOStage(MiniMindStage):
    """The policy from --init_weight, a frozen copy of it as the reference, pairs as the targets."""

    name = "dpo"
    warm_start_from = "full_sft"

    def build_dataset(self, args, tokenizer):
        self.dataset = PreferenceDataset(tokenizer, data_path=args.data_path, hf_dataset=args.hf_dataset,
                                         hf_subset=args.hf_subset, hf_split=args.hf_split,
                                         max_samples=args.max_samples, max_seq_len=args.max_seq_len,
                                         val_samples=args.val_samples, seed=args.seed, layout=args.pair_layout,
                                         strict_data=args.strict_data)
        self.tokenizer = tokenizer
        return self.dataset

    def build_companions(self, args, tokenizer, policy):
        init = init_weight_path(args, self.default_init(args))
        if init is None:
            raise SystemExit("DPO needs a starting checkpoint: its frozen copy is the reference (pass --init_weight)")
        return {"reference": Companion(load_companion_checkpoint(init, args, "reference"))}

    def build_loss(self, args, companions):
        reference = companions["reference"]
        if args.precompute_ref:
            reference = self._precompute(args, companions.pop("reference"))  # the engine then frees it
        return DPOLoss(reference, beta=args.beta, loss_type=args.loss_type)

    def _precompute(self, args, reference):
        device = next(reference.parameters()).device
        log.info("precomputing the reference log-probabilities of every pair (%s)", args.hf_dataset or args.data_path)
        table = precompute_reference(reference, pair_batches(self.dataset.all_units(), self.tokenizer,
                                                             args.batch_size),
                                     device=device, amp=autocast_dtype(args.dtype, device),
                                     progress=_progress_log(), stop=self.stop)
        log.info("reference log-probabilities of %d pairs precomputed; the reference model is released", len(table))
        return table


def _progress_log(every_s: float = 30.0):
    """A progress callback that logs the batches scored so far every `every_s` seconds."""
    last = [time.monotonic()]

    def report(done: int) -> None:
        if time.monotonic() - last[0] >= every_s:
            last[0] = time.monotonic()
            log.info("reference log-probabilities: %d batches scored", done)
    return report


@cli_main(build_parser)
def main(args: argparse.Namespace) -> int:
    return run(args, DPOStage())


if __name__ == "__main__":
    sys.exit(main())
