"""The duality experiment: ``python -m lightning_fm duality -c configs/toy/duality.yaml`` (:mod:`.run`), its
report (:mod:`.report`) and figure (:mod:`.figure`)."""
