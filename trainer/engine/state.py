"""The counters of a run (`TrainState`): what a resume restores and the logs report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    total_steps: int = 0  # the learning-rate schedule's length in optimizer steps
    tokens_seen: int = 0  # real input tokens trained on (padding excluded), all ranks
    targets_seen: int = 0  # target tokens (the loss's normaliser), all ranks
    samples_seen: int = 0
    texts_seen: int = 0

    def advance(self, *, tokens: int, targets: int, samples: int, texts: int) -> None:
        self.step += 1
        self.tokens_seen += tokens
        self.targets_seen += targets
        self.samples_seen += samples
        self.texts_seen += texts

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for f in fields(self):
            setattr(self, f.name, int(state[f.name]))
