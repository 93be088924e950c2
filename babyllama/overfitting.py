"""The overfitting alert: validation loss rising for `overfit_evals` evaluations in a row while the
training loss falls over the same span, said once per such streak.

The training loss of an evaluation is the mean of the steps' losses since the one before, so
one noisy step cannot make or hide a fall. What the watch remembers is saved in the
checkpoint's state.json (`state()`) and restored on resume (`from_state`), so a resumed run
alerts at the same evaluation as one never stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Evaluation:
    step: int
    val_loss: float
    train_loss: float  # mean training loss of the steps since the evaluation before


@dataclass
class OverfittingWatch:
    evals: int  # rises in a row that raise the alert; 0: never
    recent: list[Evaluation] = field(default_factory=list)  # the last `evals` + 1 evaluations
    train_sum: float = 0.0  # training losses since the last evaluation
    train_count: int = 0
    alerted: bool = False  # this streak of rises has had its alert
    best_step: int | None = None
    best_val_loss: float | None = None

    @classmethod
    def from_state(cls, evals: int, state: dict | None) -> OverfittingWatch:
        """The watch as a checkpoint's state.json saved it (`state()`); a fresh one without."""
        if not state:
            return cls(evals)
        return cls(evals, [Evaluation(*e) for e in state["recent"]], state["train_sum"], state["train_count"],
                   state["alerted"], state["best_step"], state["best_val_loss"])

    def state(self) -> dict:
        return {"recent": [[e.step, e.val_loss, e.train_loss] for e in self.recent], "train_sum": self.train_sum,
                "train_count": self.train_count, "alerted": self.alerted, "best_step": self.best_step,
                "best_val_loss": self.best_val_loss}

    def add_train(self, loss: float) -> None:
        if math.isfinite(loss):
            self.train_sum += loss
            self.train_count += 1

    def add_eval(self, step: int, val_loss: float, epochs: float) -> dict | None:
        """Take an evaluation; the alert's fields (`message` among them) when this one completes a
        streak that has not had its alert, else None."""
        if self.best_val_loss is None or val_loss < self.best_val_loss:
            self.best_step, self.best_val_loss = step, val_loss
        if self.train_count == 0:  # step 0, or no step since: nothing to compare the training loss by
            return None
        train_loss = self.train_sum / self.train_count
        self.train_sum, self.train_count = 0.0, 0
        if self.recent and val_loss <= self.recent[-1].val_loss:
            self.alerted = False
        self.recent = [*self.recent, Evaluation(step, val_loss, train_loss)][-(self.evals + 1):]
        span = self.recent
        rising = len(span) == self.evals + 1 and all(a.val_loss < b.val_loss for a, b in zip(span, span[1:]))
        if self.evals == 0 or self.alerted or not rising or span[-1].train_loss >= span[0].train_loss:
            return None
        self.alerted = True
        first, last = span[0], span[-1]
        message = (
            f"overfitting: the validation loss rose {self.evals} evaluations in a row ({first.val_loss:.4f} at step "
            f"{first.step:,} to {last.val_loss:.4f} at step {last.step:,}) while the training loss fell "
            f"({first.train_loss:.4f} to {last.train_loss:.4f}), after {epochs:.1f} epochs (the model has seen "
            f"the training tokens {epochs:.1f} times): it is memorising them. More data, a smaller model or "
            f"dropout (resume with --dropout 0.1) helps; the best model so far is from step {self.best_step:,} "
            f"(validation loss {self.best_val_loss:.4f}): stop there, at the checkpoint nearest it"
        )
        return {"message": message, "epochs": round(epochs, 3), "val_loss": last.val_loss,
                "best_step": self.best_step, "best_val_loss": self.best_val_loss}
