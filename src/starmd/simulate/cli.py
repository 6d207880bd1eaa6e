"""``python -m starmd.simulate.cli build ...``: the corpus build as the corpus scripts start it
(``corpus/README.md``, ``corpus/gpu_build.sh``). The commands live in :mod:`starmd.cli.simulate`."""

if __name__ == "__main__":
    from starmd.cli.simulate import corpus_app

    corpus_app()
