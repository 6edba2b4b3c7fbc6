"""The duality experiment: ``python -m lightning_fm duality -c configs/toy/duality.yaml`` (:mod:`.run`: the command,
its config schema :class:`.run.DualityExperiment` in the ``class_path``/``init_args`` format of the ``fit`` configs,
training and checks), the typed settings groups of the config (:mod:`.config`), its report (:mod:`.report`) and
figure (:mod:`.figure`)."""
