"""What every phase of a study runs on: the search, the confirmation and the retrains are siblings
on it, and none imports another.

- `tuner`: Keras Tuner's engine with what every trial of a study gets, and the loop that runs a
  phase's trials to the end in any role;
- `oracle`: the study oracle's rules, mixed into any Keras Tuner oracle;
- `planned`: an oracle of planned runs (the confirmation's, the retrains');
- `phase`: one driver for a phase in every role (single process, chief, worker);
- `callbacks`: what every trial trains with;
- `kt`: every use of Keras Tuner's private API, in one module.
"""
