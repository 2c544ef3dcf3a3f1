"""pypid's gunicorn worker (``worker_class = "pypid.worker.PypidWorker"``)."""

from pypid.worker.loop import PypidWorker

__all__ = ["PypidWorker"]
