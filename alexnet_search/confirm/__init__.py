"""Finalists, confirmed: the search's best configurations trained again before one is adopted.

A search ranks configurations by one short run each, with one seed, and its winner is often a
lucky draw. So when the search ends, its best `[confirm] finalists` configurations are trained
again from scratch with `[confirm] seeds` seeds each, for `[confirm] epochs` (the retrain's
unless a preset shortens them: the race ranks, the retrain trains the winner), and scored on
validation at their best epoch, as the search and retrain-best score; never on test. The preset's
`[confirm] baselines` (the AlexNet paper's recipe) are trained beside them with the same seeds and
epochs and may be adopted too: the search must beat the hand recipe on equal terms before its
answer replaces it, and a search that found nothing better adopts the recipe rather than a lucky
draw. The contender with the best mean is adopted into best_hyperparameters.json, which
retrain-best trains. A contender with a failed run (its loss diverged) is not adopted.

Two seeds cannot see a configuration that collapses one run in three, so the lead is raced
(`race`): once every contender has run its `[confirm] seeds`, the best mean runs one more seed,
and again, until it has `[confirm] leader_seeds`; a leader that falls behind hands the lead on.

- `contenders`: who runs (the finalists, the baselines, each with its seeds), and the baseline runs
  reused from a sibling study;
- `race`: the oracle that hands out the planned runs, then races the lead;
- `run`: the phase (its tuner, its lines, finalists.json), on the engine's driver;
- `adoption` (beside this package, no Keras): finalists.json read back, adopted, pooled.
"""
