"""``python -m sam3_trt.cli`` runs the ``sam3-trt`` command."""

from . import main

if __name__ == "__main__":  # pragma: no cover
    main()
